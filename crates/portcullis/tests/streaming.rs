//! Server-Sent Events through the real login: each event reaches the client before the upstream
//! sends the next one (the upstream sends event n + 1 only after the test has read event n
//! through Portcullis, so a buffering gateway makes the test hang and fail at [`LIMIT`]), the
//! stream outlives the route's `timeout` (which bounds only the wait for the response head), and
//! a logout ends the stream.

mod common;

use std::time::Duration;

use common::{COOKIE, Options, Stack};
use http::Method;
use testkit::{browser::Browser, streaming::SseUpstream};

const LIMIT: Duration = Duration::from_secs(20);

async fn stack_with(sse: &SseUpstream, timeout: &str) -> Stack {
    Stack::start_with(Options {
        extra_toml: format!(
            "\n[[routes]]\nprefix = \"/events\"\nupstream = \"{}\"\ntimeout = \"{timeout}\"\n",
            sse.url()
        ),
        ..Options::default()
    })
    .await
}

/// An open event stream read chunk by chunk.
struct Events {
    resp: reqwest::Response,
    seen: String,
}

impl Events {
    async fn open(stack: &Stack, ticket: &str) -> Events {
        Self::open_with(reqwest::Client::new(), stack, ticket).await
    }

    async fn open_with(client: reqwest::Client, stack: &Stack, ticket: &str) -> Events {
        let resp = tokio::time::timeout(
            LIMIT,
            client
                .get(stack.url("/events/feed"))
                .header("cookie", format!("{COOKIE}={ticket}"))
                .header("accept", "text/event-stream")
                .send(),
        )
        .await
        .expect("response head in time")
        .expect("request");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/event-stream"[..])
        );
        Events {
            resp,
            seen: String::new(),
        }
    }

    /// Reads until event `n` is complete; fails if the stream ends or stalls past [`LIMIT`].
    async fn until_event(&mut self, n: u64) {
        let want = format!("data: event {n}\n\n");
        let read = async {
            while !self.seen.contains(&want) {
                let chunk = self.resp.chunk().await.expect("read").expect("stream open");
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(LIMIT, read).await.unwrap_or_else(|_| {
            panic!(
                "event {n} arrived unbuffered (seen so far: {:?})",
                self.seen
            )
        });
        assert!(
            !self.seen.contains(&format!("data: event {}", n + 1)),
            "the upstream sent no event past {n} yet"
        );
    }

    /// Reads until the stream ends cleanly; fails if it stays open past [`LIMIT`].
    async fn until_end(&mut self) {
        let read = async {
            while let Some(chunk) = self.resp.chunk().await.expect("clean end") {
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(LIMIT, read)
            .await
            .expect("the gateway ended the stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_pass_one_by_one_with_the_bearer_token() {
    let sse = SseUpstream::start().await.expect("sse upstream");
    let stack = stack_with(&sse, "2s").await;
    let browser = Browser::new();
    let ticket = stack.login(&browser).await;
    let mut events = Events::open(&stack, &ticket).await;
    for n in 1..=3 {
        events.until_event(n).await;
        sse.release();
    }
    events.until_event(4).await;
    let req = &sse.requests()[0];
    let token = stack
        .session_record(&ticket)
        .await
        .expect("session")
        .record
        .access_token
        .clone();
    assert!(
        req.iter()
            .any(|(k, v)| k == "authorization" && *v == format!("Bearer {token}"))
    );
    assert!(!req.iter().any(|(k, _)| k == "cookie"));
    assert_eq!(stack.state().streams.count(), 1);
    drop(events);
    // The client went away: the gateway lets go of the upstream stream and unregisters it.
    tokio::time::timeout(LIMIT, sse.wait_closed(1))
        .await
        .expect("upstream stream released");
    assert!(
        common::eventually(|| async { stack.state().streams.count() == 0 }).await,
        "stream unregistered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_route_timeout() {
    let sse = SseUpstream::start().await.expect("sse upstream");
    let stack = stack_with(&sse, "1s").await;
    let browser = Browser::new();
    let ticket = stack.login(&browser).await;
    let mut events = Events::open(&stack, &ticket).await;
    events.until_event(1).await;
    // Longer than the route timeout (1 s): a timeout on the whole exchange would cut the body.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sse.release();
    events.until_event(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_event_stream() {
    let sse = SseUpstream::start().await.expect("sse upstream");
    let stack = stack_with(&sse, "2s").await;
    let browser = Browser::new();
    let ticket = stack.login(&browser).await;
    let mut events = Events::open(&stack, &ticket).await;
    events.until_event(1).await;
    let csrf = stack.csrf(&browser).await;
    let out = browser
        .request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &csrf)],
            "",
        )
        .await
        .expect("logout");
    assert_eq!(out.status.as_u16(), 200);
    events.until_end().await;
    tokio::time::timeout(LIMIT, sse.wait_closed(1))
        .await
        .expect("upstream stream released");
    // Reconnecting is refused: the session is gone.
    let again = reqwest::Client::new()
        .get(stack.url("/events/feed"))
        .header("cookie", format!("{COOKIE}={ticket}"))
        .send()
        .await
        .expect("request");
    assert_eq!(again.status().as_u16(), 401);
}

/// Over HTTP/2 the gateway closes connections that carry no request for
/// `server.header_read_timeout` (hyper's HTTP/2 server has no timer of its own: `server::idle`).
/// A quiet event stream is a request in flight: its connection must outlive that timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_over_http2_outlives_the_idle_timeout() {
    let sse = SseUpstream::start().await.expect("sse upstream");
    let stack = Stack::start_with(Options {
        server_extra: "header_read_timeout = \"1s\"".into(),
        extra_toml: format!(
            "\n[[routes]]\nprefix = \"/events\"\nupstream = \"{}\"\ntimeout = \"5s\"\n",
            sse.url()
        ),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut events = Events::open_with(h2c, &stack, &ticket).await;
    assert_eq!(events.resp.version(), reqwest::Version::HTTP_2);
    events.until_event(1).await;
    // Three idle periods with nothing on the connection but the open stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sse.release();
    events.until_event(2).await;
}
