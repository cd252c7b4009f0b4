//! Optional OTLP export of the request spans (`[tracing] otlp_endpoint`): OpenTelemetry SDK with
//! a batch processor, HTTP/protobuf, sampled by trace-id ratio for new traces and by the
//! caller's flag for continued ones. The request span (see `telemetry::RequestSpan`) becomes
//! the exported span, and its ids are the ones propagated in `traceparent`.
//!
//! The exporter posts with the gateway's own `reqwest` client (rustls + ring, no redirects, a
//! timeout): `opentelemetry-otlp`'s client features would pull in another HTTP and TLS stack.
//! The batch processor runs on its own thread, so each post is spawned onto the tokio runtime.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracer, SdkTracerProvider},
};

use crate::config::TracingConfig;

const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once an exporter runs: without one, requests skip the OpenTelemetry calls entirely.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The running exporter; [`Exporter::shutdown`] flushes what is still batched.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Must be called inside the tokio runtime that will carry the exports.
    pub fn start(cfg: &TracingConfig) -> anyhow::Result<(Exporter, SdkTracer)> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(EXPORT_TIMEOUT)
            .build()?;
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(RuntimeClient {
                http,
                runtime: tokio::runtime::Handle::current(),
            })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.otlp_endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sampling_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("portcullis");
        ENABLED.store(true, Ordering::Relaxed);
        Ok((Exporter { provider }, tracer))
    }

    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OTLP exporter shutdown");
        }
    }
}

#[derive(Debug)]
struct RuntimeClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let (status, headers, body) = self
            .runtime
            .spawn(async move {
                let resp = http.execute(request).await?;
                let (status, headers) = (resp.status(), resp.headers().clone());
                Ok::<_, reqwest::Error>((status, headers, resp.bytes().await?))
            })
            .await??;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Makes `span` the exported span of a request: the continued `incoming` context as its parent
/// (else a new trace), and returns the ids the SDK gave it, to be propagated. `None` when no
/// exporter is installed (the caller then makes its own ids).
pub fn bind_request_span(
    span: &tracing::Span,
    incoming: Option<crate::http::trace_context::TraceContext>,
) -> Option<crate::http::trace_context::TraceContext> {
    use opentelemetry::{
        Context,
        trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let parent = match incoming {
        Some(p) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            SpanId::from_bytes(p.span_id),
            TraceFlags::new(p.flags),
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    span.set_parent(parent).ok()?;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| crate::http::trace_context::TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
}
