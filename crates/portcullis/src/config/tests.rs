use super::*;

const KEY_ENV: &str = "PORTCULLIS_TEST_CONFIG_KEYS";

fn with_secrets(extra_session: &str, rest: &str) -> String {
    // A directory per call: tests run in parallel and must not see each other's half-written files.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("portcullis-cfg-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let keys = dir.join("keys");
    let secret = dir.join("secret");
    std::fs::write(&keys, KeyRing::generate_encoded().expect("rng")).expect("write");
    std::fs::write(&secret, "s3cret\n").expect("write");
    format!(
        r#"
[server]
listen = "127.0.0.1:8080"
public_origin = "http://localhost:8080"

[session]
keys_file = "{keys}"
{extra_session}

[oidc]
issuer = "http://127.0.0.1:9000"
client_id = "portcullis"
client_secret_file = "{secret}"
{rest}
"#,
        keys = keys.display(),
        secret = secret.display()
    )
}

#[test]
fn minimal_config_gets_secure_defaults() {
    let c = Config::from_toml(&with_secrets("", "")).expect("valid");
    assert_eq!(c.session.cookie_name, "__Host-SessionID");
    assert_eq!(c.session.absolute_lifetime, Duration::from_secs(28800));
    assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
    assert_eq!(c.redirect_uri(), "http://localhost:8080/bff/callback");
    assert_eq!(c.oidc.client_secret.expose(), "s3cret");
    assert!(!c.oidc.dangerous_send_id_token_hint_on_logout);
    assert_eq!(
        c.oidc.post_logout_redirect_uri.as_str(),
        "http://localhost:8080/"
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let err = Config::from_toml(&with_secrets("colour = \"blue\"", "")).expect_err("unknown key");
    assert!(err.to_string().contains("colour"), "{err}");
}

/// A secret written inline by mistake (an unknown key) is named, never echoed: syntax errors go
/// to the terminal and, on a reload, to the logs.
#[test]
fn syntax_errors_never_echo_the_offending_line() {
    let text = with_secrets("", "client_secret = \"Inline-Secret-Value-123\"");
    let err = Config::from_toml(&text)
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("client_secret"), "{err}");
    assert!(!err.contains("Inline-Secret-Value-123"), "{err}");
    let line = text
        .lines()
        .position(|l| l.starts_with("client_secret ="))
        .expect("the line")
        + 1;
    assert!(
        err.contains(&format!("line {line}, column 1 (`client_secret`)")),
        "{err}"
    );
    let broken = Config::from_toml("[server]\nlisten = \"unterminated-Secret-456\n")
        .expect_err("syntax")
        .to_string();
    assert!(!broken.contains("Secret-456"), "{broken}");
    // A secret under a key of another type: the parser's message quotes the value.
    let typed = Config::from_toml(&with_secrets("", "password_grant = \"Hunter2-Secret\""))
        .expect_err("not a boolean")
        .to_string();
    assert!(!typed.contains("Hunter2"), "{typed}");
    assert!(
        typed.contains("(`password_grant`)") && typed.contains("boolean"),
        "{typed}"
    );
}

/// The likeliest mistake with `*_env` and `*_file` keys is pasting the secret itself there.
#[test]
fn a_secret_pasted_as_an_env_name_or_path_is_not_echoed() {
    let text = with_secrets("", "").replace(
        "client_secret_file",
        "client_secret_env = \"Pasted Secret+/=123\"\n#",
    );
    let err = Config::from_toml(&text).expect_err("unset").to_string();
    assert!(
        err.contains("client_secret_env") && !err.contains("Pasted"),
        "{err}"
    );
    let text = with_secrets("", "").replace(
        "client_secret_file = \"",
        "client_secret_file = \"pasted-secret-value-",
    );
    let err = Config::from_toml(&text)
        .expect_err("unreadable")
        .to_string();
    assert!(
        err.contains("client_secret_file") && !err.contains("pasted-secret"),
        "{err}"
    );
    let err = Config::from_toml(&with_secrets("", "").replace(
        "client_secret_file = \"",
        "client_secret_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n#\"",
    ))
    .expect_err("unset")
    .to_string();
    assert!(
        err.contains("PORTCULLIS_TEST_UNSET_VAR"),
        "a real name is shown: {err}"
    );
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = with_secrets(
        "cookie_name = \"SessionID\"\nidle_timeout = \"forever\"",
        "scopes = [\"profile\"]\nsession_claims = [\"sub\", \"refresh_token\"]\n\n[[routes]]\nprefix = \"api/\"\nupstream = \"ftp://x\"\n\n[[routes]]\nprefix = \"/bff/x\"\nupstream = \"http://127.0.0.1:1\"",
    );
    let err = Config::from_toml(&text).expect_err("invalid");
    let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "session.cookie_name",
        "session.idle_timeout",
        "oidc.scopes",
        "oidc.session_claims",
        "routes[0].prefix",
        "routes[0].upstream",
        "routes[1].prefix",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
}

#[test]
fn secrets_must_come_from_env_or_file() {
    let text = with_secrets("", "").replace("client_secret_file", "client_secret_env_missing");
    assert!(Config::from_toml(&text).is_err());
    let text =
        with_secrets("", "").replace("keys_file", &format!("keys_env = \"{KEY_ENV}_UNSET\"\n# "));
    let err = Config::from_toml(&text).expect_err("unset env");
    assert!(err.to_string().contains("not set"), "{err}");
}

#[test]
fn route_prefixes_match_by_segment() {
    assert!(path_within("/api/orders", "/api/orders"));
    assert!(path_within("/api/orders/1", "/api/orders"));
    assert!(!path_within("/api/ordersX", "/api/orders"));
    assert!(!path_within("/api", "/api/orders"));
}

#[test]
fn audit_section_is_validated() {
    let rest = |audit: &str| with_secrets("", &format!("\n[audit]\n{audit}\n"));
    assert!(
        Config::from_toml(&with_secrets("", ""))
            .expect("ok")
            .audit
            .is_none()
    );
    let c = Config::from_toml(&rest("")).expect("valid");
    let a = c.audit.expect("audit");
    assert_eq!(a.target, AuditTarget::Stderr);
    assert_eq!(a.subject, SubjectMode::Hash);
    let c = Config::from_toml(&rest(
        "target = \"file\"\npath = \"/tmp/a.jsonl\"\nsubject = \"clear\"",
    ))
    .expect("valid");
    let a = c.audit.expect("audit");
    assert_eq!(a.target, AuditTarget::File("/tmp/a.jsonl".into()));
    assert_eq!(a.subject, SubjectMode::Clear);
    for (bad, key) in [
        ("target = \"file\"", "audit.path"),
        ("target = \"syslog\"", "audit.target"),
        ("path = \"/tmp/x\"", "audit.path"),
        (
            "target = \"file\"\npath = \"/nonexistent-portcullis-dir/audit.jsonl\"",
            "audit.path",
        ),
        ("target = \"file\"\npath = \"/tmp\"", "audit.path"),
        ("subject = \"maybe\"", "audit.subject"),
        (
            "hash_key_env = \"PORTCULLIS_TEST_UNSET_AUDIT_KEY\"",
            "audit.hash_key_env",
        ),
    ] {
        let e = Config::from_toml(&rest(bad)).expect_err(bad);
        assert!(e.0.iter().any(|p| p.key == key), "{bad}: {:?}", e.0);
    }
}

#[test]
fn worker_threads_default_to_the_cpus_and_are_bounded() {
    let c = Config::from_toml(&with_secrets("", "")).expect("valid");
    assert_eq!(
        c.server.worker_threads,
        crate::server::default_worker_count()
    );
    let server = |n: &str| {
        with_secrets("", "").replace(
            "public_origin = \"http://localhost:8080\"",
            &format!("public_origin = \"http://localhost:8080\"\nworker_threads = {n}"),
        )
    };
    assert_eq!(
        Config::from_toml(&server("3"))
            .expect("valid")
            .server
            .worker_threads,
        3
    );
    for bad in ["0", "-1", "1025"] {
        let err = Config::from_toml(&server(bad)).expect_err(bad);
        assert!(err.to_string().contains("server.worker_threads"), "{err}");
    }
    let err = Config::from_toml(&server("\"2\"")).expect_err("a string");
    assert!(err.to_string().contains("worker_threads"), "{err}");
}

#[test]
fn a_route_ca_file_must_be_pem_certificates_for_an_https_upstream() {
    let dir = std::env::temp_dir().join(format!("portcullis-cfg-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let ca = dir.join("ca.pem");
    let pki = testkit::pki::TestPki::issue(&["orders.internal"]).expect("pki");
    std::fs::write(&ca, &pki.ca_pem).expect("write");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "just text\n").expect("write");
    let route = |upstream: &str, file: &std::path::Path| {
        with_secrets(
            "",
            &format!(
                "[[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}\"\nca_file = \"{}\"\n",
                file.display()
            ),
        )
    };

    let c = Config::from_toml(&route("https://orders.internal:8443", &ca)).expect("valid");
    assert!(c.routes[0].ca_pem.as_ref().is_some_and(|p| !p.is_empty()));

    for (text, expected) in [
        (
            route("http://orders.internal:8080", &ca),
            "only for an https upstream",
        ),
        (
            route("https://orders.internal", &not_pem),
            "holds no PEM certificate",
        ),
        (
            route("https://orders.internal", &dir.join("missing.pem")),
            "cannot read",
        ),
    ] {
        let err = Config::from_toml(&text).expect_err(expected).to_string();
        assert!(
            err.contains("routes[0].ca_file") && err.contains(expected),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn route_timeouts_default_below_common_upstream_keep_alives_and_must_not_be_zero() {
    let route = |extra: &str| {
        with_secrets(
            "",
            &format!(
                "[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:7001\"\n{extra}"
            ),
        )
    };
    let c = Config::from_toml(&route("")).expect("valid");
    assert_eq!(c.routes[0].idle_timeout, Duration::from_secs(4));
    assert_eq!(c.routes[0].connect_timeout, Duration::from_secs(5));
    assert_eq!(c.routes[0].timeout, Duration::from_secs(30));
    let c = Config::from_toml(&route("idle_timeout = \"1500ms\"")).expect("valid");
    assert_eq!(c.routes[0].idle_timeout, Duration::from_millis(1500));

    for key in ["timeout", "connect_timeout", "idle_timeout"] {
        let err = Config::from_toml(&route(&format!("{key} = \"0s\"")))
            .expect_err(key)
            .to_string();
        assert!(
            err.contains(&format!("routes[0].{key}")) && err.contains("longer than zero"),
            "{err}"
        );
    }
    let err = Config::from_toml(&with_secrets("", "http_timeout = \"0ms\""))
        .expect_err("zero provider timeout")
        .to_string();
    assert!(err.contains("oidc.http_timeout"), "{err}");
}
