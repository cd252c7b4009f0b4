//! Real headless Chromium for browser tests: Debian's `chromium` (`/usr/bin/chromium`, or
//! `$TESTKIT_CHROMIUM`) driven by `playwright-core` (pinned in `browser-e2e/package.json`) through
//! a small Node.js driver (`browser-e2e/driver.mjs`). No browser is ever downloaded.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use testkit::chromium::{Chromium, ChromiumSession};
//! Chromium::available().require()?; // a clear error when the browser is missing
//! let mut page = ChromiumSession::open("http://127.0.0.1:8080/").await?;
//! let title = page.evaluate("document.title").await?;
//! let report = page.report().await?; // console, page errors, requests, CSP violations
//! assert!(report.console_errors().is_empty(), "{}", report.summary());
//! page.close().await?;
//! # let _ = title; Ok(()) }
//! ```
//!
//! A missing browser is an error, never a skipped test: `scripts/test.sh` installs `chromium`.
//! See `crates/testkit/README.md` ("Headless Chromium") for the driver's protocol and scenarios.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod report;
mod session;

pub use report::{
    ConsoleMessage, CspViolation, Dialog, Navigation, PageError, PageReport, RequestRecord,
    ScenarioResult,
};
pub use session::ChromiumSession;

/// Debian's Chromium.
pub const DEFAULT_EXECUTABLE: &str = "/usr/bin/chromium";

/// How long one driver request may take unless it says otherwise (a `timeoutMs` field adds to
/// a 30 s margin instead).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How many browsers one test process runs at once unless `$TESTKIT_CHROMIUM_PARALLEL` says
/// otherwise ([`ChromiumSession::launch_with`] waits for a slot).
pub const DEFAULT_PARALLEL: usize = 2;

pub(super) const STDERR_TAIL_LINES: usize = 100;

/// The driver's directory (`crates/testkit/browser-e2e`).
pub fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser-e2e")
}

/// Whether headless Chromium can run here, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// The browser and Node.js both run.
    pub available: bool,
    /// What was found (`Chromium 156… at /usr/bin/chromium, node v20…`) or what is missing.
    pub reason: String,
    /// The executable that was checked.
    pub executable: PathBuf,
    /// `chromium --version`, when it ran.
    pub version: Option<String>,
}

impl Availability {
    /// `Ok` when available, else an error that says what is missing and how to install it.
    pub fn require(&self) -> anyhow::Result<()> {
        if self.available {
            return Ok(());
        }
        bail!(
            "headless Chromium is required for this test and is not available: {}\n\
             scripts/test.sh installs it (Debian package `chromium`: apt-get install chromium); \
             $TESTKIT_CHROMIUM points at another Chromium binary, $TESTKIT_NODE at another node",
            self.reason
        )
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.available {
            "available"
        } else {
            "NOT available"
        };
        write!(f, "headless Chromium {state}: {}", self.reason)
    }
}

/// Entry points: availability and launching.
#[derive(Debug, Clone, Copy)]
pub struct Chromium;

impl Chromium {
    /// `$TESTKIT_CHROMIUM`, else [`DEFAULT_EXECUTABLE`].
    pub fn executable() -> PathBuf {
        std::env::var_os("TESTKIT_CHROMIUM")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_EXECUTABLE), PathBuf::from)
    }

    /// Checks (once per process) that the executable runs (`--version`) and that Node.js >= 20
    /// is there. The driver's npm dependencies are installed at the first launch, not here.
    pub fn available() -> Availability {
        static CHECKED: OnceLock<Availability> = OnceLock::new();
        CHECKED
            .get_or_init(|| Self::check(&Self::executable()))
            .clone()
    }

    /// The same check for another executable, not cached.
    pub fn check(executable: &Path) -> Availability {
        check_availability(executable)
    }

    /// [`ChromiumSession::launch`].
    pub async fn launch() -> anyhow::Result<ChromiumSession> {
        ChromiumSession::launch().await
    }
}

pub(super) fn node_binary() -> String {
    std::env::var("TESTKIT_NODE").unwrap_or_else(|_| "node".to_owned())
}

fn check_availability(executable: &Path) -> Availability {
    let executable = executable.to_owned();
    let missing = |reason: String| Availability {
        available: false,
        reason,
        executable: executable.clone(),
        version: None,
    };
    if !executable.is_file() {
        return missing(format!("{} does not exist", executable.display()));
    }
    let out = match Command::new(&executable)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => return missing(format!("running `{} --version`: {e}", executable.display())),
    };
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || version.is_empty() {
        return missing(format!(
            "`{} --version` failed ({}): {}",
            executable.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let node = node_binary();
    let node_version = match Command::new(&node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => return missing(format!("`{node} --version` failed ({})", out.status)),
        Err(e) => return missing(format!("Node.js (`{node}`) is needed to drive it: {e}")),
    };
    let major: u32 = node_version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return missing(format!(
            "Node.js >= 20 is needed to drive it (found {node_version})"
        ));
    }
    Availability {
        available: true,
        reason: format!("{version} at {}, node {node_version}", executable.display()),
        executable,
        version: Some(version),
    }
}

/// How to launch the browser. Serialised (camelCase) as the driver's `launch` options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LaunchOptions {
    /// Another executable than [`Chromium::executable`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable_path: Option<PathBuf>,
    /// Extra command-line switches (after the driver's own).
    pub args: Vec<String>,
    /// Extra host names and the loopback address each resolves to, e.g. `evil.test` →
    /// `127.0.0.1` for a second site (Chromium's `--host-resolver-rules`).
    pub hosts: BTreeMap<String, String>,
    /// By default every host name but `localhost` and `127.0.0.1` (and [`Self::hosts`]) fails to
    /// resolve, so nothing leaves the machine.
    pub allow_external_hosts: bool,
    /// Default timeout of every action and wait, in milliseconds (driver default 10 000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// URL globs the browser refuses to fetch (Playwright routes; they turn off the HTTP cache
    /// while set). Refused requests are recorded with a `failure` starting with
    /// `net::ERR_BLOCKED_BY_CLIENT`.
    pub block_urls: Vec<String>,
    /// Refuse service worker registration.
    pub block_service_workers: bool,
    /// Accept any TLS certificate.
    pub ignore_https_errors: bool,
}

/// What `launch` answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Launched {
    /// The protocol version of `driver.mjs`.
    pub driver: u32,
    /// The browser's version, e.g. `156.0.8078.108`.
    pub version: String,
    /// The executable.
    pub executable_path: String,
    /// The fresh profile directory (removed when the browser closes).
    pub user_data_dir: String,
    /// The switches the driver added to Playwright's.
    pub args: Vec<String>,
    /// How long the launch took.
    pub launch_ms: u64,
}

/// Launches a browser with `scenario["launch"]` as [`LaunchOptions`] (camelCase JSON), runs the
/// scenario (see [`ChromiumSession::scenario`]) and closes it. `name` labels errors.
pub async fn run_scenario(name: &str, scenario: Value) -> anyhow::Result<ScenarioResult> {
    let options = match scenario.get("launch") {
        Some(v) => launch_options_from_json(v)
            .with_context(|| format!("scenario {name}: bad launch options"))?,
        None => LaunchOptions::default(),
    };
    let mut session = ChromiumSession::launch_with(options)
        .await
        .with_context(|| format!("scenario {name}"))?;
    let result = session
        .scenario(scenario)
        .await
        .with_context(|| format!("scenario {name}"))?;
    session.close().await?;
    Ok(result)
}

fn launch_options_from_json(v: &Value) -> anyhow::Result<LaunchOptions> {
    Ok(serde_json::from_value(v.clone())?)
}

static NODE_MODULES: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// The `playwright-core` version pinned in `package.json`.
fn pinned_version(dir: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(dir.join("package.json"))
        .with_context(|| format!("reading {}/package.json", dir.display()))?;
    let v: Value = serde_json::from_str(&text)?;
    v["dependencies"]["playwright-core"]
        .as_str()
        .map(str::to_owned)
        .context("package.json pins no playwright-core")
}

fn installed_version(dir: &Path) -> Option<String> {
    let text =
        std::fs::read_to_string(dir.join("node_modules/playwright-core/package.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_owned)
}

fn node_modules_installed(dir: &Path) -> anyhow::Result<bool> {
    Ok(
        installed_version(dir).as_deref() == Some(pinned_version(dir)?.as_str())
            && dir.join("node_modules/.package-lock.json").is_file(),
    )
}

/// `npm ci` in `dir` unless the pinned playwright-core is installed (see [`crate::npm`]).
pub(super) async fn ensure_node_modules(dir: &Path) -> anyhow::Result<()> {
    static MODULES: crate::npm::Modules = crate::npm::Modules {
        label: "[chromium]",
        what: "the pinned node_modules/playwright-core",
        installed: node_modules_installed,
    };
    crate::npm::ensure(&NODE_MODULES, dir, &MODULES).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn launch_options_serialise_as_the_driver_expects() {
        let mut o = LaunchOptions {
            timeout_ms: Some(5000),
            block_service_workers: true,
            ..LaunchOptions::default()
        };
        o.hosts.insert("evil.test".into(), "127.0.0.1".into());
        let v = serde_json::to_value(&o).expect("json");
        assert_eq!(v["timeoutMs"], 5000);
        assert_eq!(v["blockServiceWorkers"], true);
        assert_eq!(v["hosts"]["evil.test"], "127.0.0.1");
        assert!(v.get("executablePath").is_none());
        let back = launch_options_from_json(&v).expect("round trip");
        assert_eq!(back, o);
        assert!(launch_options_from_json(&json!({"nope": 1})).is_err());
    }

    #[test]
    fn report_helpers() {
        let r: PageReport = serde_json::from_value(json!({
            "url": "http://localhost/",
            "console": [{"type": "error", "text": "x"}, {"type": "log", "text": "y"}],
            "requests": [{"id": 1, "url": "http://localhost/bff/csp-report", "method": "POST",
                          "status": 204, "responseHeaders": {"content-type": "text/plain"}},
                         {"id": 2, "url": "http://127.0.0.1:9/x.js", "failure": "csp"}],
            "cspViolations": [{"effectiveDirective": "script-src-elem", "blockedURI": "inline"}],
        }))
        .expect("parse");
        assert_eq!(r.console_errors().len(), 1);
        assert_eq!(
            r.requests_to("/bff/csp-report")[0].path(),
            "/bff/csp-report"
        );
        assert_eq!(r.requests[0].header("Content-Type"), Some("text/plain"));
        assert_eq!(r.failed_requests().len(), 1);
        assert_eq!(r.violations_of("script-src-elem").len(), 1);
        assert!(r.summary().contains("FAILED csp"));
    }
}
