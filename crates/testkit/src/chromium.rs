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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Debian's Chromium.
pub const DEFAULT_EXECUTABLE: &str = "/usr/bin/chromium";

/// How long one driver request may take unless it says otherwise (a `timeoutMs` field adds to
/// a 30 s margin instead).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How many browsers one test process runs at once unless `$TESTKIT_CHROMIUM_PARALLEL` says
/// otherwise ([`ChromiumSession::launch_with`] waits for a slot).
pub const DEFAULT_PARALLEL: usize = 2;

const STDERR_TAIL_LINES: usize = 100;

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

fn node_binary() -> String {
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

/// A console message of a page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsoleMessage {
    /// `log`, `error`, `warning`, `info`, `debug`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The text (at most 4 KiB).
    pub text: String,
    /// The script's URL, when known.
    pub url: String,
    /// The line, when known (0-based).
    pub line: u64,
    /// The page's URL when it was logged.
    pub page_url: String,
}

/// An uncaught exception in a page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PageError {
    /// `TypeError`, …
    pub name: String,
    /// The message.
    pub message: String,
    /// The stack, when known.
    pub stack: String,
    /// The page's URL when it was thrown.
    pub page_url: String,
}

/// A request the browser context made (pages and service workers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestRecord {
    /// Order of appearance, from 1.
    pub id: u64,
    /// The full URL.
    pub url: String,
    /// The method.
    pub method: String,
    /// `document`, `script`, `fetch`, `image`, `other` (CSP reports), …
    pub resource_type: String,
    /// A navigation request.
    pub navigation: bool,
    /// Made by a service worker.
    pub from_service_worker: bool,
    /// The body (at most 4 KiB).
    pub post_data: Option<String>,
    /// The response status, once there is a response.
    pub status: Option<u16>,
    /// The response status text.
    pub status_text: Option<String>,
    /// All response headers, names in lower case.
    pub response_headers: Option<BTreeMap<String, String>>,
    /// Why it failed: `csp` (blocked by the Content Security Policy),
    /// `net::ERR_BLOCKED_BY_CLIENT…` ([`LaunchOptions::block_urls`]), `net::ERR_CONNECTION_REFUSED`, …
    pub failure: Option<String>,
    /// The response body was received completely.
    pub finished: bool,
}

impl RequestRecord {
    /// The URL's path (`/bff/csp-report`), or the whole URL if it does not parse.
    pub fn path(&self) -> String {
        url::Url::parse(&self.url).map_or_else(|_| self.url.clone(), |u| u.path().to_owned())
    }

    /// A response header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .as_ref()?
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A `securitypolicyviolation` event seen in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CspViolation {
    /// The document.
    #[serde(rename = "documentURI")]
    pub document_uri: String,
    /// `inline`, `eval`, `trusted-types-sink`, or the blocked URL.
    #[serde(rename = "blockedURI")]
    pub blocked_uri: String,
    /// The directive as written.
    pub violated_directive: String,
    /// `script-src-elem`, `script-src-attr`, `require-trusted-types-for`, `trusted-types`, …
    pub effective_directive: String,
    /// `enforce` or `report`.
    pub disposition: String,
    /// The first characters of the blocked code (when the policy has `'report-sample'`, or for
    /// Trusted Types).
    pub sample: String,
    /// Where it happened.
    pub source_file: String,
    /// Line.
    pub line_number: u64,
    /// The document's HTTP status.
    pub status_code: u16,
    /// The frame's URL.
    pub frame_url: String,
}

/// An `alert`/`confirm`/`prompt`/`beforeunload` dialog (dismissed by the driver).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Dialog {
    /// `alert`, `confirm`, `prompt`, `beforeunload`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its message.
    pub message: String,
    /// The page's URL.
    pub page_url: String,
}

/// Everything the browser context recorded since it started (or since the last
/// [`ChromiumSession::take_report`]), plus the current page's URL and title.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PageReport {
    /// The current page's URL.
    pub url: Option<String>,
    /// The current page's `document.title`.
    pub title: Option<String>,
    /// Console messages.
    pub console: Vec<ConsoleMessage>,
    /// Uncaught exceptions.
    pub page_errors: Vec<PageError>,
    /// Requests, in order.
    pub requests: Vec<RequestRecord>,
    /// CSP and Trusted Types violations.
    pub csp_violations: Vec<CspViolation>,
    /// Dialogs (an XSS payload's `alert(1)` shows up here).
    pub dialogs: Vec<Dialog>,
}

impl PageReport {
    /// Console messages of type `error`.
    pub fn console_errors(&self) -> Vec<&ConsoleMessage> {
        self.console.iter().filter(|m| m.kind == "error").collect()
    }

    /// Requests whose URL contains `needle`.
    pub fn requests_to(&self, needle: &str) -> Vec<&RequestRecord> {
        self.requests
            .iter()
            .filter(|r| r.url.contains(needle))
            .collect()
    }

    /// Requests that failed (any reason).
    pub fn failed_requests(&self) -> Vec<&RequestRecord> {
        self.requests
            .iter()
            .filter(|r| r.failure.is_some())
            .collect()
    }

    /// Violations of `effective_directive` (e.g. `script-src-elem`).
    pub fn violations_of(&self, effective_directive: &str) -> Vec<&CspViolation> {
        self.csp_violations
            .iter()
            .filter(|v| v.effective_directive == effective_directive)
            .collect()
    }

    /// A readable multi-line digest, for assertion messages.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "page {} (title {:?})\n",
            self.url.as_deref().unwrap_or("-"),
            self.title.as_deref().unwrap_or("")
        );
        for m in &self.console {
            s.push_str(&format!("  console.{}: {}\n", m.kind, m.text));
        }
        for e in &self.page_errors {
            s.push_str(&format!("  page error: {}: {}\n", e.name, e.message));
        }
        for r in &self.requests {
            let outcome = match (&r.failure, r.status) {
                (Some(f), _) => format!("FAILED {f}"),
                (None, Some(code)) => code.to_string(),
                (None, None) => "pending".to_owned(),
            };
            s.push_str(&format!(
                "  {} {} [{}] -> {outcome}\n",
                r.method, r.url, r.resource_type
            ));
        }
        for v in &self.csp_violations {
            s.push_str(&format!(
                "  CSP violation: {} blocked {} ({})\n",
                v.effective_directive, v.blocked_uri, v.disposition
            ));
        }
        for d in &self.dialogs {
            s.push_str(&format!("  dialog {}: {}\n", d.kind, d.message));
        }
        s
    }
}

/// What `goto` answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Navigation {
    /// The page's URL afterwards (redirects followed).
    pub url: String,
    /// The main response's status (`None` for e.g. `about:blank`).
    pub status: Option<u16>,
    /// The main response's headers, names in lower case.
    pub headers: Option<BTreeMap<String, String>>,
}

impl Navigation {
    /// A response header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .as_ref()?
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// The result of a scenario: `{"ok", "error", "values", "steps", "ms", "report"}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ScenarioResult {
    /// Every step succeeded (or threw when it had `expectError: true`).
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// Values of the steps that had a `name`.
    pub values: serde_json::Map<String, Value>,
    /// One entry per step run: `{"op", "name", "ok", "ms", "error"?}`.
    pub steps: Vec<Value>,
    /// Wall time of the steps, in milliseconds.
    pub ms: u64,
    /// The records at the end of the scenario.
    pub report: PageReport,
}

impl ScenarioResult {
    /// The value of step `name` (`Null` when there is none).
    pub fn value(&self, name: &str) -> &Value {
        self.values.get(name).unwrap_or(&Value::Null)
    }

    /// `Ok(self)` when the scenario succeeded, else an error with the failing step and the
    /// report's summary.
    pub fn expect_ok(&self) -> anyhow::Result<&Self> {
        if self.ok {
            return Ok(self);
        }
        bail!(
            "browser scenario failed: {}\n{}",
            self.error.as_deref().unwrap_or("(no error)"),
            self.report.summary()
        )
    }
}

/// One browser (a fresh profile, one context, a current page) behind a running driver. Closed
/// (gracefully: the driver closes the browser and removes the profile) by [`Self::close`] or
/// when dropped; the browser also dies with the test process.
#[derive(Debug)]
pub struct ChromiumSession {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    next_id: u64,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    launched: Launched,
    broken: Option<String>,
    _permit: OwnedSemaphorePermit,
}

fn parallel_slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let n = std::env::var("TESTKIT_CHROMIUM_PARALLEL")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_PARALLEL);
            Arc::new(Semaphore::new(n))
        })
        .clone()
}

impl ChromiumSession {
    /// Launches with the default [`LaunchOptions`].
    pub async fn launch() -> anyhow::Result<ChromiumSession> {
        Self::launch_with(LaunchOptions::default()).await
    }

    /// Launches and opens `url` (waiting for its `load` event).
    pub async fn open(url: &str) -> anyhow::Result<ChromiumSession> {
        let mut s = Self::launch().await?;
        s.goto(url).await?;
        Ok(s)
    }

    /// Checks [`Chromium::available`] (a missing browser is an error saying how to install
    /// it), installs the driver's npm dependencies if needed, waits for a free slot (see
    /// [`DEFAULT_PARALLEL`]), starts `node driver.mjs` and launches the browser.
    pub async fn launch_with(options: LaunchOptions) -> anyhow::Result<ChromiumSession> {
        Chromium::available().require()?;
        let dir = driver_dir();
        ensure_node_modules(&dir).await?;
        let permit = parallel_slots()
            .acquire_owned()
            .await
            .context("the browser slot semaphore is closed")?;
        let node = node_binary();
        let mut child = Command::new(&node)
            .arg("driver.mjs")
            .current_dir(&dir)
            .env("TESTKIT_CHROMIUM", Chromium::executable())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning `{node} driver.mjs` in {}", dir.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("driver stdout not piped")?;
        let stderr = child.stderr.take().context("driver stderr not piped")?;

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        std::thread::Builder::new()
            .name("chromium-stderr".to_owned())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[chromium] {line}");
                    let mut t = tail
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if t.len() == STDERR_TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
            .context("spawning the driver's stderr reader")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("chromium-stdout".to_owned())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("spawning the driver's stdout reader")?;

        let mut session = ChromiumSession {
            child: Some(child),
            stdin,
            lines,
            next_id: 1,
            stderr_tail,
            launched: Launched::default(),
            broken: None,
            _permit: permit,
        };
        let launched = session
            .command("launch", json!({ "options": options }))
            .await
            .context("launching Chromium")?;
        session.launched =
            serde_json::from_value(launched).context("parsing the driver's launch answer")?;
        Ok(session)
    }

    /// What the launch reported (browser version, profile directory, switches, time).
    pub fn launched(&self) -> &Launched {
        &self.launched
    }

    /// The last lines the driver (and Playwright) wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Sends one request (`{"op": op, …fields}`) and returns its `result`; the driver's error
    /// (message and stack) otherwise. See the README for the ops.
    pub async fn command(&mut self, op: &str, fields: Value) -> anyhow::Result<Value> {
        if let Some(why) = &self.broken {
            bail!("the browser session is unusable: {why}");
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut req = match fields {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => bail!("command fields must be a JSON object, not {other}"),
        };
        let wait = req
            .get("timeoutMs")
            .and_then(Value::as_u64)
            .map_or(COMMAND_TIMEOUT, |ms| {
                Duration::from_millis(ms) + Duration::from_secs(30)
            });
        req.insert("id".to_owned(), json!(id));
        req.insert("op".to_owned(), json!(op));
        let mut line = serde_json::to_string(&Value::Object(req))?;
        line.push('\n');
        let write = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("stdin closed")),
        };
        if let Err(e) = write {
            return Err(self.fail(format!("writing to the driver: {e}")));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    return Err(self.fail(format!(
                        "the driver exited while running {op} (status {status:?})"
                    )));
                }
                Err(_) => {
                    return Err(self.fail(format!("no answer to {op} within {wait:?}")));
                }
            };
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                eprintln!("[chromium] (stdout) {line}");
                continue;
            };
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                eprintln!("[chromium] unexpected answer: {line}");
                continue;
            }
            if msg.get("ok").and_then(Value::as_bool) == Some(true) {
                return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
            }
            let err = msg.get("error").cloned().unwrap_or(Value::Null);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            bail!("browser {op} failed: {message}");
        }
    }

    /// Marks the session unusable (a lost or hung driver) and builds the error.
    fn fail(&mut self, why: String) -> anyhow::Error {
        self.broken = Some(why.clone());
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        anyhow::anyhow!(
            "{why}\n--- driver stderr (tail) ---\n{}",
            self.stderr_tail().join("\n")
        )
    }

    /// Navigates the current page (waits for `load`).
    pub async fn goto(&mut self, url: &str) -> anyhow::Result<Navigation> {
        let v = self.command("goto", json!({ "url": url })).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Reloads the current page.
    pub async fn reload(&mut self) -> anyhow::Result<Navigation> {
        let v = self.command("reload", json!({})).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Evaluates a JavaScript expression in the page's main world and returns its JSON value
    /// (promises awaited; a function is called without argument; `undefined` → `null`). The
    /// page's CSP does not apply to the evaluated code itself (DevTools allows eval there), but
    /// it and Trusted Types do apply to what the code does to the DOM.
    pub async fn evaluate(&mut self, expression: &str) -> anyhow::Result<Value> {
        self.command("evaluate", json!({ "expression": expression }))
            .await
    }

    /// Evaluates `function` (a JavaScript function expression, e.g. `(a) => a.x`) called with
    /// `arg`.
    pub async fn evaluate_with(&mut self, function: &str, arg: Value) -> anyhow::Result<Value> {
        self.command("evaluate", json!({ "expression": function, "arg": arg }))
            .await
    }

    /// Polls `expression` until it is truthy (at most `timeout`); returns its value.
    pub async fn wait_for_function(
        &mut self,
        expression: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.command(
            "waitForFunction",
            json!({ "expression": expression, "timeoutMs": millis(timeout) }),
        )
        .await
    }

    /// Waits for a visible element.
    pub async fn wait_for_selector(&mut self, selector: &str) -> anyhow::Result<()> {
        self.command("waitForSelector", json!({ "selector": selector }))
            .await
            .map(drop)
    }

    /// Waits until the page's URL matches `glob` (Playwright's URL glob); returns it.
    pub async fn wait_for_url(&mut self, glob: &str) -> anyhow::Result<String> {
        let v = self.command("waitForURL", json!({ "url": glob })).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Clicks an element.
    pub async fn click(&mut self, selector: &str) -> anyhow::Result<()> {
        self.command("click", json!({ "selector": selector }))
            .await
            .map(drop)
    }

    /// Fills an input.
    pub async fn fill(&mut self, selector: &str, value: &str) -> anyhow::Result<()> {
        self.command("fill", json!({ "selector": selector, "value": value }))
            .await
            .map(drop)
    }

    /// Presses a key (`Enter`, …) in an element.
    pub async fn press(&mut self, selector: &str, key: &str) -> anyhow::Result<()> {
        self.command("press", json!({ "selector": selector, "key": key }))
            .await
            .map(drop)
    }

    /// `document.title`.
    pub async fn title(&mut self) -> anyhow::Result<String> {
        let v = self.command("title", json!({})).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The current page's URL.
    pub async fn url(&mut self) -> anyhow::Result<String> {
        let v = self.command("url", json!({})).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The current page's serialised DOM.
    pub async fn content(&mut self) -> anyhow::Result<String> {
        let v = self.command("content", json!({})).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The browser's cookies (Playwright's shape: `name`, `value`, `domain`, `path`,
    /// `httpOnly`, `secure`, `sameSite`, `expires`), HttpOnly ones included.
    pub async fn cookies(&mut self) -> anyhow::Result<Vec<Value>> {
        let v = self.command("cookies", json!({})).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Opens a new page in the same context and makes it the current one.
    pub async fn new_page(&mut self) -> anyhow::Result<usize> {
        let v = self.command("newPage", json!({})).await?;
        Ok(usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(0))
    }

    /// Waits until the records hold `count` requests whose URL contains `url_contains` and
    /// that have a response or failed; returns them.
    pub async fn wait_for_request(
        &mut self,
        url_contains: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<RequestRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self
                .wait_for_record(
                    "requests",
                    json!({ "url": url_contains }),
                    count,
                    deadline.saturating_duration_since(Instant::now()),
                )
                .await?;
            let found: Vec<RequestRecord> = serde_json::from_value(v)?;
            let done = found
                .iter()
                .filter(|r| r.status.is_some() || r.failure.is_some())
                .count();
            if done >= count || Instant::now() >= deadline {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `count` CSP violations of `effective_directive` were seen; returns them.
    pub async fn wait_for_violation(
        &mut self,
        effective_directive: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<CspViolation>> {
        let v = self
            .wait_for_record(
                "cspViolations",
                json!({ "effectiveDirective": effective_directive }),
                count,
                timeout,
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Waits until `count` records of `kind` (`console`, `pageErrors`, `requests`,
    /// `cspViolations`, `dialogs`) match every field of `matching` (strings: substring;
    /// anything else: equality); returns the matching records.
    pub async fn wait_for_record(
        &mut self,
        kind: &str,
        matching: Value,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.command(
            "waitForRecord",
            json!({ "kind": kind, "match": matching, "count": count, "timeoutMs": millis(timeout) }),
        )
        .await
    }

    /// Everything recorded so far (kept).
    pub async fn report(&mut self) -> anyhow::Result<PageReport> {
        let v = self.command("report", json!({})).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Everything recorded so far, and forget it.
    pub async fn take_report(&mut self) -> anyhow::Result<PageReport> {
        let v = self.command("report", json!({ "clear": true })).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Runs a scenario in this browser: `{"url"?: …, "steps": [{"op": …, "name"?: …,
    /// "expectError"?: bool, …}]}` (see the README). A failing step is reported in the result
    /// (`ok: false`), not as an `Err`; `Err` means the driver itself failed.
    pub async fn scenario(&mut self, scenario: Value) -> anyhow::Result<ScenarioResult> {
        let v = self.command("scenario", scenario).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Closes the browser (removing its profile) and waits for the driver to exit.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if self.broken.is_none() {
            self.command("close", json!({})).await?;
        }
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            tokio::task::spawn_blocking(move || reap(&mut child, Duration::from_secs(15)))
                .await
                .context("joining the reaper")?;
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Waits up to `grace` for `child` to exit by itself, then kills it.
fn reap(child: &mut Child, grace: Duration) {
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for ChromiumSession {
    fn drop(&mut self) {
        // Closing stdin makes the driver close the browser and remove the profile; a thread
        // (not a task: the test's runtime may be gone next) waits for that, then kills.
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let spawned = std::thread::Builder::new()
                .name("chromium-reaper".to_owned())
                .spawn(move || reap(&mut child, Duration::from_secs(15)));
            if let Err(e) = spawned {
                eprintln!("[chromium] could not start the reaper thread: {e}");
            }
        }
    }
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

/// `npm ci --no-audit --no-fund` in `dir` unless the pinned playwright-core is installed; once
/// per process and under an exclusive lock on `dir/.npm-ci.lock` (as `scripts/common.sh` takes).
async fn ensure_node_modules(dir: &Path) -> anyhow::Result<()> {
    NODE_MODULES
        .get_or_try_init(|| async {
            if node_modules_installed(dir)? {
                return Ok(());
            }
            let dir = dir.to_owned();
            tokio::task::spawn_blocking(move || install_locked(&dir))
                .await
                .context("npm ci task panicked")?
        })
        .await
        .map(|_| ())
}

fn install_locked(dir: &Path) -> anyhow::Result<()> {
    let lock_path = dir.join(".npm-ci.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if node_modules_installed(dir)? {
        return Ok(());
    }
    eprintln!(
        "[chromium] playwright-core missing or outdated: running npm ci in {}",
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
    if !node_modules_installed(dir)? {
        bail!("`npm ci` succeeded but node_modules/playwright-core is not the pinned version");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
