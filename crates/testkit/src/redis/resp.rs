//! A tiny RESP2 client, to talk to the servers without the `redis` crate.

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::COMMAND_TIMEOUT;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …` (the text after `-`).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*2\r\n…`
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a simple string or of a UTF-8 bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) => Some(s),
            Reply::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The integer of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The message of an error reply (`NOAUTH Authentication required.`).
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a nil reply.
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A RESP2 connection to a Redis server on 127.0.0.1 (plain TCP or TLS).
/// Every operation times out after [`COMMAND_TIMEOUT`].
pub struct RespConnection {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    port: u16,
    tls: bool,
}

impl std::fmt::Debug for RespConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespConnection")
            .field("port", &self.port)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RespConnection {
    /// Connects over plain TCP to `127.0.0.1:port`.
    pub async fn connect(port: u16) -> anyhow::Result<RespConnection> {
        let tcp = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port} timed out"))?
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        Ok(RespConnection {
            stream: Box::new(tcp),
            buf: Vec::new(),
            port,
            tls: false,
        })
    }

    /// Connects over TLS to `127.0.0.1:port`, trusting only the
    /// certificates in `ca_pem` and checking the server name `127.0.0.1`.
    pub async fn connect_tls(port: u16, ca_pem: &str) -> anyhow::Result<RespConnection> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.context("parsing the CA PEM")?)
                .context("adding the CA certificate")?;
        }
        if roots.is_empty() {
            bail!("no certificate in the CA PEM");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port} timed out"))?
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1").context("server name")?;
        let tls = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .with_context(|| format!("TLS handshake with 127.0.0.1:{port} timed out"))?
        .with_context(|| format!("TLS handshake with 127.0.0.1:{port}"))?;
        Ok(RespConnection {
            stream: Box::new(tls),
            buf: Vec::new(),
            port,
            tls: true,
        })
    }

    /// Sends one command (each argument a bulk string) and reads its reply.
    /// Error replies are `Ok(Reply::Error(_))`; `Err` is for I/O, protocol
    /// errors and timeouts.
    pub async fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> anyhow::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let port = self.port;
        tokio::time::timeout(COMMAND_TIMEOUT, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await?;
            loop {
                if let Some((reply, used)) = parse_reply(&self.buf, 0)? {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("127.0.0.1:{port} closed the connection");
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .with_context(|| format!("command on 127.0.0.1:{port} timed out"))?
    }
}

/// Parses one reply at `buf[pos..]`: `Ok(None)` when incomplete, else the
/// reply and the position after it.
fn parse_reply(buf: &[u8], pos: usize) -> anyhow::Result<Option<(Reply, usize)>> {
    let Some(rel) = buf
        .get(pos..)
        .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"))
    else {
        return Ok(None);
    };
    let line_end = pos + rel;
    let next = line_end + 2;
    let kind = buf[pos];
    let text = std::str::from_utf8(&buf[pos + 1..line_end]).context("non-UTF-8 RESP header")?;
    let reply = match kind {
        b'+' => (Reply::Simple(text.to_owned()), next),
        b'-' => (Reply::Error(text.to_owned()), next),
        b':' => (Reply::Integer(text.parse().context("RESP integer")?), next),
        b'$' => {
            let len: i64 = text.parse().context("RESP bulk length")?;
            if len < 0 {
                (Reply::Nil, next)
            } else {
                let len = usize::try_from(len).context("RESP bulk length")?;
                let end = next + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    bail!("RESP bulk string not followed by CRLF");
                }
                (Reply::Bulk(buf[next..end].to_vec()), end + 2)
            }
        }
        b'*' => {
            let n: i64 = text.parse().context("RESP array length")?;
            if n < 0 {
                (Reply::Nil, next)
            } else {
                let mut items = Vec::new();
                let mut at = next;
                for _ in 0..n {
                    match parse_reply(buf, at)? {
                        Some((item, after)) => {
                            items.push(item);
                            at = after;
                        }
                        None => return Ok(None),
                    }
                }
                (Reply::Array(items), at)
            }
        }
        other => bail!("unsupported RESP type byte {:?}", char::from(other)),
    };
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resp2() {
        let buf = b"*3\r\n+OK\r\n$3\r\nfoo\r\n*2\r\n:-5\r\n$-1\r\n-ERR x\r\n";
        let (reply, used) = parse_reply(buf, 0).expect("parse").expect("complete");
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Simple("OK".into()),
                Reply::Bulk(b"foo".to_vec()),
                Reply::Array(vec![Reply::Integer(-5), Reply::Nil]),
            ])
        );
        let (err, end) = parse_reply(buf, used).expect("parse").expect("complete");
        assert_eq!(err.error(), Some("ERR x"));
        assert_eq!(end, buf.len());
        for cut in 0..used {
            assert!(
                parse_reply(&buf[..cut], 0).expect("parse").is_none(),
                "prefix of {cut} bytes must be incomplete"
            );
        }
    }
}
