//! Middleware that runs a synchronous step before and/or after the inner service, as a plain
//! tower layer: no boxed future, no boxed or cloned inner service per request.
//!
//! Why: `axum::middleware::from_fn` boxes each request's future, boxes the rest of the stack
//! into its `Next`, and clones that rest on every call; with several layers that is a few
//! thousand instructions per layer per request (docs/performance.md). Layers whose work is a
//! check on the request or an edit of the response (hygiene, CSRF, security headers, the CSP
//! fallback, metrics) need none of it: they implement [`Around`] and keep one concern each.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{extract::Request, response::Response};
use tower::{Layer, Service};

/// What [`Around::before`] decided.
#[derive(Debug)]
pub enum Before<C> {
    /// Call the inner service, then [`Around::after`] with this.
    Continue(C),
    /// Answer with this response; the inner service never sees the request.
    Answer(Response),
}

/// One middleware step.
pub trait Around: Clone + Send + Sync + 'static {
    /// What [`Around::before`] hands to [`Around::after`] (a start time, say).
    type Carry: Send + 'static;

    /// Runs before the inner service.
    fn before(&self, req: &mut Request) -> Before<Self::Carry>;

    /// Runs on the inner service's response (not on a response `before` returned).
    fn after(&self, carry: Self::Carry, resp: &mut Response);
}

/// The [`Layer`] for an [`Around`] step.
#[derive(Debug, Clone)]
pub struct AroundLayer<A>(pub A);

impl<A: Clone, S> Layer<S> for AroundLayer<A> {
    type Service = AroundService<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService {
            around: self.0.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AroundService<A, S> {
    around: A,
    inner: S,
}

impl<A, S> Service<Request> for AroundService<A, S>
where
    A: Around,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AroundFuture<A, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.around.before(&mut req) {
            Before::Continue(carry) => AroundFuture::Inner {
                inner: self.inner.call(req),
                after: Some((self.around.clone(), carry)),
            },
            Before::Answer(resp) => AroundFuture::Answered { resp: Some(resp) },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = AroundProj]
    pub enum AroundFuture<A: Around, F> {
        Inner {
            #[pin]
            inner: F,
            after: Option<(A, A::Carry)>,
        },
        Answered {
            resp: Option<Response>,
        },
    }
}

impl<A, F> Future for AroundFuture<A, F>
where
    A: Around,
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AroundProj::Inner { inner, after } => {
                let Ok(mut resp) = std::task::ready!(inner.poll(cx));
                if let Some((around, carry)) = after.take() {
                    around.after(carry, &mut resp);
                }
                Poll::Ready(Ok(resp))
            }
            AroundProj::Answered { resp } => Poll::Ready(Ok(resp
                .take()
                .expect("an answered AroundFuture is polled once"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::StatusCode};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    /// Refuses `/no`; otherwise counts in the request and stamps the response.
    #[derive(Clone)]
    struct Stamp(&'static str);

    impl Around for Stamp {
        type Carry = String;

        fn before(&self, req: &mut Request) -> Before<String> {
            if req.uri().path() == "/no" {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::FORBIDDEN;
                return Before::Answer(resp);
            }
            req.headers_mut()
                .append("x-seen", self.0.parse().expect("ascii"));
            Before::Continue(req.uri().path().to_owned())
        }

        fn after(&self, path: String, resp: &mut Response) {
            resp.headers_mut().append(
                "x-after",
                format!("{}:{path}", self.0).parse().expect("ascii"),
            );
        }
    }

    async fn call(path: &str) -> Response {
        let inner = tower::service_fn(|req: Request| async move {
            let seen: Vec<String> = req
                .headers()
                .get_all("x-seen")
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .collect();
            Ok::<_, Infallible>(Response::new(Body::from(seen.join(","))))
        });
        ServiceBuilder::new()
            .layer(AroundLayer(Stamp("outer")))
            .layer(AroundLayer(Stamp("inner")))
            .service(inner)
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn before_runs_outside_in_and_after_inside_out() {
        let resp = call("/yes").await;
        let after: Vec<_> = resp.headers().get_all("x-after").iter().collect();
        assert_eq!(after, ["inner:/yes", "outer:/yes"]);
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b"outer,inner");
    }

    #[tokio::test]
    async fn a_refusal_skips_the_inner_service_and_every_after() {
        let resp = call("/no").await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get("x-after").is_none());
    }
}
