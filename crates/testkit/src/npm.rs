//! `npm ci` for the Node.js fixtures (the OpenID Provider, the Chromium driver): run at most once
//! per process (a `OnceCell` per fixture) and once per machine at a time (an exclusive lock on
//! `DIR/.npm-ci.lock`, the one `scripts/common.sh` takes too), and only when the fixture's own
//! check says its modules are missing.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use tokio::sync::OnceCell;

/// What a fixture's modules look like when installed, and how it is named in messages.
pub(crate) struct Modules {
    /// `[idp]`, `[chromium]`: the prefix of the fixture's log lines.
    pub label: &'static str,
    /// What is missing when `installed` says no, for the messages.
    pub what: &'static str,
    pub installed: fn(&Path) -> anyhow::Result<bool>,
}

/// Installs `modules` in `dir` unless they are there already; `cell` makes it once per process.
pub(crate) async fn ensure(
    cell: &'static OnceCell<()>,
    dir: &Path,
    modules: &'static Modules,
) -> anyhow::Result<()> {
    cell.get_or_try_init(|| async {
        if (modules.installed)(dir)? {
            return Ok(());
        }
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || install_locked(&dir, modules))
            .await
            .context("npm ci task panicked")?
    })
    .await
    .map(|_| ())
}

fn install_locked(dir: &Path, modules: &Modules) -> anyhow::Result<()> {
    let lock_path = dir.join(".npm-ci.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Checked again under the lock: another process may have installed them meanwhile.
    if (modules.installed)(dir)? {
        return Ok(());
    }
    eprintln!(
        "{} {} missing: running npm ci in {}",
        modules.label,
        modules.what,
        dir.display()
    );
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running `npm ci` (is npm installed?)")?;
    if !out.status.success() {
        bail!(
            "`npm ci` in {} failed ({}):\n{}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !(modules.installed)(dir)? {
        bail!("`npm ci` succeeded but {} is still missing", modules.what);
    }
    Ok(())
    // `lock` is released when dropped here.
}
