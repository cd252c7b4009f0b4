//! `[tracing]`: optional export of the gateway's request spans over OTLP (HTTP/protobuf). Off
//! when the table (or `otlp_endpoint`) is absent; trace context propagation is always on.

use url::Url;

use super::raw::RawTracing;

#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The full traces URL, e.g. `http://collector:4318/v1/traces` (used as given).
    pub otlp_endpoint: Url,
    pub service_name: String,
    /// Share of new traces recorded, 0.0–1.0; a continued trace follows the caller's decision.
    pub sampling_ratio: f64,
}

/// `Ok(None)`: export off. `Err`: every `(key, problem)`.
pub fn validate(raw: RawTracing) -> Result<Option<TracingConfig>, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let endpoint = match raw.otlp_endpoint.as_deref() {
        None => None,
        Some(s) => match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                problems.push((
                    "tracing.otlp_endpoint",
                    format!("`{s}` is not an http(s) URL like \"http://collector:4318/v1/traces\""),
                ));
                None
            }
        },
    };
    let service_name = raw.service_name.unwrap_or_else(|| "portcullis".into());
    if service_name.is_empty() || service_name.len() > 128 {
        problems.push(("tracing.service_name", "must be 1 to 128 characters".into()));
    }
    let sampling_ratio = raw.sampling_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampling_ratio) {
        problems.push((
            "tracing.sampling_ratio",
            "must be between 0.0 and 1.0".into(),
        ));
    }
    if raw.otlp_endpoint.is_none() && raw.sampling_ratio.is_some() {
        problems.push((
            "tracing.sampling_ratio",
            "only with tracing.otlp_endpoint (nothing is exported without it)".into(),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(endpoint.map(|otlp_endpoint| TracingConfig {
        otlp_endpoint,
        service_name,
        sampling_ratio,
    }))
}
