//! Middleware that awaits something of its own around the inner service (a session lookup, a
//! tracing span), as a plain tower layer with one boxed future per request.
//!
//! Why not `axum::middleware::from_fn`: it boxes the step's future, and also boxes the rest of
//! the stack into its `Next` (an allocation plus a clone of the boxed stack per request), whose
//! call then boxes again. Here the inner service stays its concrete type, and is cloned per
//! request only as tower asks (a ready service is taken, a fresh clone left in its place). The
//! steps that need no await implement [`super::around::Around`] instead, with no box at all.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{extract::Request, response::Response};
use tower::{Layer, Service};

/// The rest of the stack, handed to [`Wrap::wrap`] ready to take one request.
#[derive(Debug)]
pub struct Next<S>(S);

impl<S> Next<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    pub async fn run(mut self, req: Request) -> Response {
        let Ok(resp) = self.0.call(req).await;
        resp
    }
}

/// One middleware step that awaits.
pub trait Wrap: Clone + Send + Sync + 'static {
    fn wrap<S>(self, req: Request, next: Next<S>) -> impl Future<Output = Response> + Send
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send;
}

/// The [`Layer`] for a [`Wrap`] step.
#[derive(Debug, Clone)]
pub struct WrapLayer<W>(pub W);

impl<W: Clone, S> Layer<S> for WrapLayer<W> {
    type Service = WrapService<W, S>;

    fn layer(&self, inner: S) -> Self::Service {
        WrapService {
            step: self.0.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WrapService<W, S> {
    step: W,
    inner: S,
}

impl<W, S> Service<Request> for WrapService<W, S>
where
    W: Wrap,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The service polled ready is the one that must take the request.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let step = self.step.clone();
        Box::pin(async move { Ok(step.wrap(req, Next(ready)).await) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{body::Body, http::StatusCode};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    /// Awaits before the inner service (a yield, standing in for a store lookup), refuses
    /// `/no`, and stamps what it saw on both sides.
    #[derive(Clone)]
    struct Step(&'static str);

    impl Wrap for Step {
        async fn wrap<S>(self, mut req: Request, next: Next<S>) -> Response
        where
            S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
            S::Future: Send,
        {
            tokio::task::yield_now().await;
            if req.uri().path() == "/no" {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::FORBIDDEN;
                return resp;
            }
            req.headers_mut()
                .append("x-seen", self.0.parse().expect("ascii"));
            let mut resp = next.run(req).await;
            resp.headers_mut()
                .append("x-after", self.0.parse().expect("ascii"));
            resp
        }
    }

    fn stack(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone {
        let inner = tower::service_fn(move |req: Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let seen: Vec<String> = req
                    .headers()
                    .get_all("x-seen")
                    .iter()
                    .map(|v| v.to_str().expect("ascii").to_owned())
                    .collect();
                Ok::<_, Infallible>(Response::new(Body::from(seen.join(","))))
            }
        });
        ServiceBuilder::new()
            .layer(WrapLayer(Step("outer")))
            .layer(WrapLayer(Step("inner")))
            .service(inner)
    }

    fn get(path: &str) -> Request {
        Request::get(path).body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn steps_run_outside_in_and_their_endings_inside_out() {
        let calls = Arc::new(AtomicUsize::new(0));
        let resp = stack(Arc::clone(&calls))
            .oneshot(get("/yes"))
            .await
            .expect("infallible");
        let after: Vec<_> = resp.headers().get_all("x-after").iter().collect();
        assert_eq!(after, ["inner", "outer"]);
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b"outer,inner");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refusal_never_reaches_the_inner_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let resp = stack(Arc::clone(&calls))
            .oneshot(get("/no"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get("x-after").is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn one_service_serves_many_requests_in_flight() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = stack(Arc::clone(&calls));
        let mut pending = Vec::new();
        for _ in 0..8 {
            svc.ready().await.expect("infallible");
            pending.push(svc.call(get("/yes")));
        }
        for f in pending {
            assert_eq!(f.await.expect("infallible").status(), StatusCode::OK);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 8);
    }
}
