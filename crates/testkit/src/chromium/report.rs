//! What the driver reports about a page: console, errors, requests, CSP violations, dialogs,
//! navigations and scenario results.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
