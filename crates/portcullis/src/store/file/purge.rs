//! Reclaiming expired records and index members, a batch per write transaction.

use std::{ops::Bound, sync::Weak, time::Duration};

use redb::{Database, ReadableMultimapTable, ReadableTable};

use super::{
    FileStore, INDEX_EXPIRY, INDEX_MEMBERS, INDEXES, Inner, PURGE_BATCH, VALUE_EXPIRY, VALUES,
    now_ms,
};

const PURGE_EVERY: Duration = Duration::from_secs(30);

/// One purge batch: up to [`PURGE_BATCH`] expired records and as many expired indexes.
pub(super) fn purge_batch(db: &Database, now: u64) -> Result<(usize, bool), redb::Error> {
    let txn = db.begin_write()?;
    let (removed, more) = {
        let mut expiry = txn.open_table(VALUE_EXPIRY)?;
        let mut values = txn.open_table(VALUES)?;
        let due: Vec<(u64, String)> = expiry
            .range::<(u64, &str)>(..(now.saturating_add(1), ""))?
            .take(PURGE_BATCH)
            .map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
            .collect::<Result<_, _>>()?;
        for (at, key) in &due {
            expiry.remove((*at, key.as_str()))?;
            let stale = values
                .get(key.as_str())?
                .is_some_and(|v| v.value().0 == *at);
            if stale {
                values.remove(key.as_str())?;
            }
        }

        let mut index_expiry = txn.open_table(INDEX_EXPIRY)?;
        let mut indexes = txn.open_table(INDEXES)?;
        let mut members = txn.open_multimap_table(INDEX_MEMBERS)?;
        let due_indexes: Vec<(u64, String)> = index_expiry
            .range::<(u64, &str)>(..(now.saturating_add(1), ""))?
            .take(PURGE_BATCH)
            .map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
            .collect::<Result<_, _>>()?;
        for (at, index) in &due_indexes {
            index_expiry.remove((*at, index.as_str()))?;
            let stale = indexes
                .get(index.as_str())?
                .is_some_and(|v| v.value() == *at);
            if stale {
                indexes.remove(index.as_str())?;
                members.remove_all(index.as_str())?;
            }
        }
        (
            due.len() + due_indexes.len(),
            due.len() == PURGE_BATCH || due_indexes.len() == PURGE_BATCH,
        )
    };
    if removed == 0 {
        txn.abort()?;
    } else {
        txn.commit()?;
    }
    Ok((removed, more))
}

/// Drops, from the indexes after `after`, members whose record is gone or expired (and indexes
/// left empty), checking about [`PURGE_BATCH`] members per write transaction. Returns how many
/// indexes it removed and where to resume (`None` once every index was visited).
fn prune_members_batch(
    db: &Database,
    now: u64,
    after: Option<&str>,
) -> Result<(usize, Option<String>), redb::Error> {
    let txn = db.begin_write()?;
    let mut changed = false;
    let mut removed = 0;
    let mut resume = None;
    {
        let mut indexes = txn.open_table(INDEXES)?;
        let mut index_expiry = txn.open_table(INDEX_EXPIRY)?;
        let mut members = txn.open_multimap_table(INDEX_MEMBERS)?;
        let values = txn.open_table(VALUES)?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let names: Vec<(String, u64)> = indexes
            .range::<&str>((lower, Bound::Unbounded))?
            .take(PURGE_BATCH)
            .map(|r| r.map(|(k, v)| (k.value().to_owned(), v.value())))
            .collect::<Result<_, _>>()?;
        let mut checked = 0;
        for (i, (index, at)) in names.iter().enumerate() {
            let all: Vec<String> = members
                .get(index.as_str())?
                .map(|m| m.map(|m| m.value().to_owned()))
                .collect::<Result<_, _>>()?;
            checked += all.len();
            let mut left = all.len();
            for m in &all {
                let live = values.get(m.as_str())?.is_some_and(|v| v.value().0 > now);
                if !live {
                    members.remove(index.as_str(), m.as_str())?;
                    left -= 1;
                    changed = true;
                }
            }
            if left == 0 {
                indexes.remove(index.as_str())?;
                index_expiry.remove((*at, index.as_str()))?;
                removed += 1;
                changed = true;
            }
            if checked >= PURGE_BATCH && i + 1 < names.len() {
                resume = Some(index.clone());
                break;
            }
        }
        if resume.is_none() && names.len() == PURGE_BATCH {
            resume = names.last().map(|(index, _)| index.clone());
        }
    }
    if changed {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok((removed, resume))
}

/// Purges batch after batch (each its own write transaction, so other writers run in between)
/// until nothing expired is left, then drops index members whose record is gone, as the memory
/// store's sweep does.
pub(super) fn purge_all(db: &Database) -> Result<usize, redb::Error> {
    let now = now_ms();
    let mut total = 0;
    loop {
        let (removed, more) = purge_batch(db, now)?;
        total += removed;
        if !more {
            break;
        }
    }
    let mut cursor: Option<String> = None;
    loop {
        let (removed, next) = prune_members_batch(db, now, cursor.as_deref())?;
        total += removed;
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(total),
        }
    }
}

pub(super) async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(store) = inner.upgrade().map(|inner| FileStore { inner }) else {
            return;
        };
        if let Err(e) = store.purge_expired().await {
            tracing::warn!(error = %e, "purging expired sessions from the session file failed");
        }
    }
}
