//! Leakage scans: every token the real provider issued (read from the fixture's
//! `GET /_test/issued-tokens`) and the client secret must be absent from whatever a test saw.

use testkit::{browser::Browser, browser::Response, idp::Idp};

/// Every access, refresh and ID token the provider's token endpoint handed out so far.
pub async fn issued_tokens(idp: &Idp) -> Vec<String> {
    let r = Browser::new()
        .get(&format!("{}/_test/issued-tokens", idp.issuer()))
        .await
        .expect("GET /_test/issued-tokens");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    r.json().expect("json")["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

/// The strings that must never show: each token, each JWT's payload and signature on their own,
/// and the client secret.
pub async fn secrets(idp: &Idp) -> Vec<String> {
    let mut out = vec![idp.client_secret().to_owned()];
    for t in issued_tokens(idp).await {
        let parts: Vec<&str> = t.split('.').collect();
        if parts.len() == 3 {
            out.extend(
                parts[1..]
                    .iter()
                    .filter(|p| p.len() >= 16)
                    .map(|p| (*p).to_owned()),
            );
        }
        out.push(t);
    }
    out
}

/// Everything the browser could read in a response: status, every header, the body.
pub fn dump(r: &Response) -> String {
    let mut s = format!("{} {}\n", r.status, r.url);
    for (k, v) in &r.headers {
        s.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    s.push_str(&String::from_utf8_lossy(&r.body));
    s
}

/// Panics naming the haystack if any secret occurs in it.
pub fn assert_absent(secrets: &[String], haystacks: &[(&str, &[u8])]) {
    for (what, bytes) in haystacks {
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a token or secret ({} chars, starts {:?}) leaked into {what}",
                s.len(),
                &s[..s.len().min(6)]
            );
        }
    }
}

/// The whole log capture of this test process against every issued token.
pub async fn assert_logs_clean(idp: &Idp) {
    let secrets = secrets(idp).await;
    let logs = super::running::captured_logs();
    assert!(
        !logs.is_empty(),
        "the log capture is empty: the scan would prove nothing"
    );
    assert_absent(&secrets, &[("the captured logs", logs.as_bytes())]);
}
