//! One browser behind a running driver: launched, commanded line by line, closed and reaped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{
    COMMAND_TIMEOUT, Chromium, CspViolation, DEFAULT_PARALLEL, LaunchOptions, Launched, Navigation,
    PageReport, RequestRecord, STDERR_TAIL_LINES, ScenarioResult, driver_dir, ensure_node_modules,
    node_binary,
};

/// One browser (a fresh profile, one context, a current page) behind a running driver. Closed
/// (gracefully: the driver closes the browser and removes the profile) by [`Self::close`] or
/// when dropped; the browser also dies with the test process.
#[derive(Debug)]
pub struct ChromiumSession {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    next_id: u64,
    stderr_tail: crate::log_tail::LogTail,
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

        let stderr_tail = crate::log_tail::LogTail::new(STDERR_TAIL_LINES);
        let tail = stderr_tail.clone();
        std::thread::Builder::new()
            .name("chromium-stderr".to_owned())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[chromium] {line}");
                    tail.push(line);
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
        self.stderr_tail.lines()
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
