//! A small, bounded memo of opened session records: the cookie ticket and the exact sealed bytes
//! the store returned map to the record they open to.
//!
//! Why: deriving the store key and the record key and then opening and parsing the record was a
//! third of a proxied request's CPU (docs/performance.md). Opening is a pure function of the
//! ticket, the key ring and the sealed bytes, so it can be remembered without changing any
//! outcome:
//! - the store is still read on every request, and a hit needs the stored bytes to be exactly the
//!   ones remembered, so a logout, revocation, expiry or rewrite (refresh) on any instance takes
//!   effect on the very next request, as before;
//! - each memo belongs to one [`super::SessionManager`], which a config reload (and so a key ring
//!   change) replaces, so a record sealed under a retired key is never served from here;
//! - only records that opened are remembered: a forged or unknown ticket never gets a slot.
//!
//! The memo is direct-mapped (a slot per ticket, chosen by a hash keyed with a per-process
//! random key, so which slots are taken says nothing about any ticket's bits and nobody can aim
//! a ticket at someone else's slot): fixed memory, no eviction policy, one uncontended lock per
//! lookup. Tickets are compared in constant time.
//!
//! What it holds, tickets and opened records, is what serving a request holds in memory anyway,
//! but for longer: a slot unused for [`IDLE`] is emptied by a sweeper (and records wipe their
//! tokens when dropped), so it only ever holds sessions active in the last minute or two.
//! `docs/threat-model.md` discusses the trade-off; `session.open_cache_entries = 0` turns it off.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use subtle::ConstantTimeEq;

use super::{SessionRecord, ticket::Ticket};
use crate::store::StoreKey;

/// What a hit gives back: everything `SessionManager::load` would otherwise derive.
pub(super) struct Opened {
    pub key: StoreKey,
    pub sealed: Bytes,
    pub record: Arc<SessionRecord>,
}

struct Slot {
    ticket: Ticket,
    opened: Opened,
    last_used: Instant,
}

/// How long an unused slot may keep its record.
pub(super) const IDLE: Duration = Duration::from_secs(60);
const SWEEP_EVERY: Duration = Duration::from_secs(15);

#[derive(Default)]
pub(super) struct OpenCache {
    slots: Box<[Mutex<Option<Slot>>]>,
    /// SipHash with a random key: the slot index of a ticket.
    index: RandomState,
}

impl std::fmt::Debug for OpenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCache")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl OpenCache {
    /// A memo of `entries` slots; 0 remembers nothing.
    pub fn new(entries: usize) -> Self {
        OpenCache {
            slots: (0..entries).map(|_| Mutex::new(None)).collect(),
            index: RandomState::new(),
        }
    }

    /// [`OpenCache::new`], plus (inside a Tokio runtime) the sweeper that empties idle slots; it
    /// stops when the memo is dropped (a config reload replaces the memo).
    pub fn shared(entries: usize) -> Arc<Self> {
        Self::swept(entries, SWEEP_EVERY, IDLE)
    }

    fn swept(entries: usize, every: Duration, idle: Duration) -> Arc<Self> {
        let memo = Arc::new(Self::new(entries));
        if entries > 0 && tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&memo), every, idle));
        }
        memo
    }

    fn slot(&self, ticket: &Ticket) -> Option<&Mutex<Option<Slot>>> {
        if self.slots.is_empty() {
            return None;
        }
        let index = self.index.hash_one(ticket.secret()) % self.slots.len() as u64;
        self.slots.get(usize::try_from(index).ok()?)
    }

    /// The store key of a remembered ticket, with the sealed bytes and record it opened to.
    pub fn get(&self, ticket: &Ticket) -> Option<Opened> {
        let mut slot = self.slot(ticket)?.lock().ok()?;
        let slot = slot.as_mut()?;
        if !bool::from(slot.ticket.secret().ct_eq(ticket.secret())) {
            return None;
        }
        slot.last_used = Instant::now();
        Some(Opened {
            key: slot.opened.key.clone(),
            sealed: slot.opened.sealed.clone(),
            record: Arc::clone(&slot.opened.record),
        })
    }

    /// Remembers what `ticket` opened to, replacing whatever shared its slot.
    pub fn put(&self, ticket: &Ticket, opened: Opened) {
        if let Some(Ok(mut slot)) = self.slot(ticket).map(Mutex::lock) {
            *slot = Some(Slot {
                ticket: ticket.clone(),
                opened,
                last_used: Instant::now(),
            });
        }
    }

    /// Forgets what `ticket` opened to (its record is gone or no longer opens).
    pub fn forget_ticket(&self, ticket: &Ticket) {
        if let Some(Ok(mut slot)) = self.slot(ticket).map(Mutex::lock)
            && slot
                .as_ref()
                .is_some_and(|s| bool::from(s.ticket.secret().ct_eq(ticket.secret())))
        {
            *slot = None;
        }
    }

    /// Forgets the session stored under `key` (it ended here, and only its key is known): its record leaves memory now
    /// rather than when another session happens to take the slot. Correctness does not depend
    /// on it (a hit needs the record still in the store).
    pub fn forget(&self, key: &StoreKey) {
        for slot in &self.slots {
            if let Ok(mut slot) = slot.lock()
                && slot.as_ref().is_some_and(|s| &s.opened.key == key)
            {
                *slot = None;
            }
        }
    }

    /// Empties the slots not used for `idle`.
    pub fn purge_idle(&self, idle: Duration) {
        let now = Instant::now();
        for slot in &self.slots {
            if let Ok(mut slot) = slot.lock()
                && slot
                    .as_ref()
                    .is_some_and(|s| now.duration_since(s.last_used) >= idle)
            {
                *slot = None;
            }
        }
    }

    /// Forgets everything (every session was ended).
    pub fn clear(&self) {
        for slot in &self.slots {
            if let Ok(mut slot) = slot.lock() {
                *slot = None;
            }
        }
    }
}

async fn sweep(memo: Weak<OpenCache>, every: Duration, idle: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        match memo.upgrade() {
            Some(memo) => memo.purge_idle(idle),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(key: &str) -> Opened {
        Opened {
            key: StoreKey(key.into()),
            sealed: Bytes::from_static(b"sealed"),
            record: Arc::new(super::super::scenarios::record(key, 60)),
        }
    }

    #[test]
    fn a_slot_answers_only_for_its_own_ticket() {
        // One slot: every ticket shares it, so only the full comparison tells them apart.
        let memo = OpenCache::new(1);
        let (a, b) = (
            Ticket::generate().expect("rng"),
            Ticket::generate().expect("rng"),
        );
        memo.put(&a, opened("s:a"));
        assert_eq!(memo.get(&a).expect("hit").key, StoreKey("s:a".into()));
        assert!(memo.get(&b).is_none(), "another ticket in the same slot");
        memo.put(&b, opened("s:b"));
        assert!(memo.get(&a).is_none(), "replaced");
        memo.forget(&StoreKey("s:b".into()));
        assert!(memo.get(&b).is_none(), "forgotten by key");
        memo.put(&b, opened("s:b"));
        memo.forget_ticket(&a);
        assert!(
            memo.get(&b).is_some(),
            "another ticket's slot is left alone"
        );
        memo.forget_ticket(&b);
        assert!(memo.get(&b).is_none(), "forgotten by ticket");
    }

    #[test]
    fn a_ticket_differing_only_in_its_last_bytes_is_another_ticket() {
        // One slot, so both tickets land in it: only the full comparison can tell them apart.
        let memo = OpenCache::new(1);
        let a = Ticket::generate().expect("rng");
        let mut twin = a.encode().into_bytes();
        twin[42] = if twin[42] == b'A' { b'Q' } else { b'A' };
        let twin = Ticket::parse(std::str::from_utf8(&twin).expect("ascii")).expect("ticket");
        assert_eq!(a.secret()[..31], twin.secret()[..31]);
        memo.put(&a, opened("s:a"));
        assert!(memo.get(&twin).is_none());
        assert!(memo.get(&a).is_some());
    }

    #[test]
    fn idle_slots_are_emptied() {
        let memo = OpenCache::new(8);
        let a = Ticket::generate().expect("rng");
        memo.put(&a, opened("s:a"));
        memo.purge_idle(Duration::from_secs(60));
        assert!(memo.get(&a).is_some(), "used just now: kept");
        memo.purge_idle(Duration::ZERO);
        assert!(memo.get(&a).is_none(), "idle: emptied");
    }

    #[tokio::test]
    async fn the_sweeper_empties_idle_slots_and_holds_no_reference() {
        let memo = OpenCache::swept(8, Duration::from_millis(10), Duration::ZERO);
        let a = Ticket::generate().expect("rng");
        memo.put(&a, opened("s:a"));
        // Waits for the sweeper (bounded), asserts nothing about how long it took.
        for _ in 0..500 {
            if memo.slots.iter().all(|s| s.lock().expect("lock").is_none()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(memo.get(&a).is_none(), "swept");
        let weak = Arc::downgrade(&memo);
        drop(memo);
        assert!(weak.upgrade().is_none(), "the sweeper keeps the memo alive");
    }

    #[test]
    fn zero_entries_remember_nothing() {
        let memo = OpenCache::new(0);
        let a = Ticket::generate().expect("rng");
        memo.put(&a, opened("s:a"));
        assert!(memo.get(&a).is_none());
        memo.clear();
    }
}
