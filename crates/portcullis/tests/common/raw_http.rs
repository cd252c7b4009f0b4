//! Exact bytes over a raw TCP socket, for attacks an HTTP client would refuse to send or would
//! normalise away (smuggling, absolute-form request lines, obfuscated framing headers).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A guard against a hung server, not a measurement: a correct server closes long before.
const READ_GUARD: Duration = Duration::from_secs(20);

/// The port of `http://host:PORT`.
pub fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in base URL")
}

/// Writes `bytes` to 127.0.0.1:`port` and reads until the server closes the connection.
/// Callers end their payload with a `Connection: close` request (or rely on an error closing
/// it), so the read always ends. Panics if the server keeps the socket open past the guard.
pub async fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // A server may answer and close before reading everything: ignore a failed write.
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    match tokio::time::timeout(READ_GUARD, s.read_to_end(&mut buf)).await {
        Ok(_) => buf,
        Err(_) => panic!(
            "the server kept the connection open; read so far: {}",
            String::from_utf8_lossy(&buf)
        ),
    }
}

/// The status codes of every response in `raw`, in order: each `HTTP/1.x NNN ` status line
/// (a response body need not end with a newline, so the next status line may follow it directly).
pub fn statuses(raw: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 13 <= raw.len() {
        let w = &raw[i..i + 13];
        let is_status = (w.starts_with(b"HTTP/1.1 ") || w.starts_with(b"HTTP/1.0 "))
            && w[9..12].iter().all(u8::is_ascii_digit)
            && w[12] == b' ';
        if is_status {
            let code = std::str::from_utf8(&w[9..12])
                .ok()
                .and_then(|c| c.parse::<u16>().ok());
            out.extend(code);
            i += 13;
        } else {
            i += 1;
        }
    }
    out
}

/// A closing request for the same connection: if the server is still reading requests after the
/// attack, it answers this one and closes; if it gave up, it has closed already.
pub fn sentinel(host: &str) -> String {
    format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}
