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

/// `check-config` and `serve` agree: TLS files that exist but hold no certificate, or no key, or
/// a key that is not the certificate's, are configuration problems (with the key), not a failure
/// of `serve` after it has bound its port.
#[test]
fn tls_files_must_hold_a_certificate_and_its_key() {
    let dir = std::env::temp_dir().join(format!("portcullis-cfg-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let pki = testkit::pki::TestPki::issue(&["localhost"]).expect("pki");
    let other = testkit::pki::TestPki::issue(&["localhost"]).expect("pki");
    let write = |name: &str, content: &str| {
        let p = dir.join(name);
        std::fs::write(&p, content).expect("write");
        p.display().to_string()
    };
    let cert = write("cert.pem", &pki.cert_pem);
    let key = write("key.pem", &pki.key_pem);
    let other_key = write("other-key.pem", &other.key_pem);
    let text = write("text.pem", "just text\n");
    let tls = |cert: &str, key: &str| {
        with_secrets("", "").replace(
            "public_origin = \"http://localhost:8080\"",
            &format!(
                "public_origin = \"http://localhost:8080\"\ntls = {{ cert_file = \"{cert}\", key_file = \"{key}\" }}"
            ),
        )
    };

    let c = Config::from_toml(&tls(&cert, &key)).expect("a valid pair");
    assert!(c.server.tls.is_some());
    for (cert, key, expected) in [
        (&text, &key, &["server.tls.cert_file"][..]),
        (&cert, &text, &["server.tls.key_file"]),
        (
            &key,
            &cert,
            &["server.tls.cert_file", "server.tls.key_file"],
        ),
        (&cert, &other_key, &["server.tls"]),
    ] {
        let err = Config::from_toml(&tls(cert, key)).expect_err(cert);
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, expected, "{cert} {key}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis URL is where a password is most often written: a URL refused for its scheme or its
/// syntax is named without its user info.
#[test]
fn refused_redis_urls_are_shown_without_their_password() {
    for (key, value) in [
        ("redis_url", "\"valkey://default:Redis-Pass-1@cache:6379\""),
        ("redis_url", "\"redis://:Redis-Pass-2@cache:port\""),
        (
            "redis_cluster_urls",
            "[\"redis://10.0.0.1:6379\", \"tcp://u:Redis-Pass-3@10.0.0.2\"]",
        ),
    ] {
        let err = Config::from_toml(&with_secrets(
            &format!("store = \"redis\"\n{key} = {value}"),
            "",
        ))
        .expect_err(value)
        .to_string();
        assert!(
            err.contains(&format!("session.{key}")) && !err.contains("Redis-Pass"),
            "{err}"
        );
    }
    let err = Config::from_toml(&with_secrets(
        "store = \"redis\"\nredis_url = \"valkey://cache:6379\"",
        "",
    ))
    .expect_err("scheme")
    .to_string();
    assert!(
        err.contains("valkey://cache:6379"),
        "shown otherwise: {err}"
    );
}

/// The file store creates its file, not its directory: a missing directory is reported by
/// `check-config`, as for `audit.path`, not only when `serve` opens the store.
#[test]
fn the_file_store_directory_must_exist() {
    let err = Config::from_toml(&with_secrets(
        "store = \"file\"\nfile_path = \"/nonexistent-portcullis-dir/sessions.redb\"",
        "",
    ))
    .expect_err("no such directory")
    .to_string();
    assert!(err.contains("session.file_path"), "{err}");
    let dir = std::env::temp_dir();
    let c = Config::from_toml(&with_secrets(
        &format!(
            "store = \"file\"\nfile_path = \"{}\"",
            dir.join("portcullis-not-created.redb").display()
        ),
        "",
    ))
    .expect("an existing directory");
    assert!(matches!(c.session.store, StoreConfig::File(_)));
    assert!(!dir.join("portcullis-not-created.redb").exists());
}

/// The words inside `…` code spans of `text`.
fn code_words(text: &str) -> std::collections::BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| {
            span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The keys the parser accepts in one table, from serde's own message about an unknown key.
fn parser_keys(toml_with_unknown_key: &str) -> std::collections::BTreeSet<String> {
    let err = toml::from_str::<RawConfig>(toml_with_unknown_key).expect_err("an unknown key");
    let message = err.message();
    let (_, expected) = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("{message}"));
    code_words(expected)
}

/// docs/configuration.md split at its table headings (`## [server]`, and sub-table lines such as
/// `[[aggregates.parts]]:`), by table name.
fn doc_sections(md: &str) -> std::collections::BTreeMap<String, String> {
    let mut sections = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        let heading = line
            .strip_prefix("## ")
            .or_else(|| (line.starts_with("`[[") && line.ends_with("`:")).then_some(line));
        if let Some(h) = heading {
            current = h
                .split('`')
                .nth(1)
                .filter(|t| t.starts_with('['))
                .map(|t| t.trim_matches(['[', ']']).to_owned());
            continue;
        }
        if let Some(name) = &current {
            let text: &mut String = sections.entry(name.clone()).or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    sections
}

/// `[name]` / `[[name]]` headers of the example, commented out or not → (text, the key set on
/// each line).
fn example_sections(
    toml: &str,
) -> std::collections::BTreeMap<String, (String, std::collections::BTreeSet<String>)> {
    let mut sections =
        std::collections::BTreeMap::<String, (String, std::collections::BTreeSet<String>)>::new();
    let mut current = String::new();
    for line in toml.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if line.starts_with('[') && line.ends_with(']') {
            current = line.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let entry = sections.entry(current.clone()).or_default();
        entry.0.push_str(line);
        entry.0.push('\n');
        if let Some((key, _)) = line.split_once('=')
            && !key.trim().is_empty()
            && key
                .trim()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            entry.1.insert(key.trim().to_owned());
        }
    }
    sections
}

/// Every key the parser accepts is in docs/configuration.md and in examples/portcullis.toml (the
/// README promises "every key" for both), and neither names a key the parser would refuse.
#[test]
fn the_docs_and_the_example_name_exactly_the_keys_the_parser_accepts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    let docs = doc_sections(&read("docs/configuration.md"));
    let example = example_sections(&read("examples/portcullis.toml"));
    const U: &str = "zz_not_a_key = 1";

    let tables = parser_keys(U);
    for t in &tables {
        assert!(docs.contains_key(t), "no `[{t}]` section in the docs");
        assert!(example.contains_key(t), "no `[{t}]` in the example");
    }
    // (parser table, its docs section, its example section, a TOML with an unknown key in it)
    let nested = |t: &str| format!("[{t}]\n{U}");
    let mut checks = vec![
        (
            "server.tls",
            "server",
            "server",
            format!("[server]\ntls = {{ {U} }}"),
        ),
        (
            "aggregates.parts",
            "aggregates.parts",
            "aggregates.parts",
            format!("[[aggregates]]\n[[aggregates.parts]]\n{U}"),
        ),
        (
            "profiles.select",
            "profiles",
            "profiles.select",
            format!("[[profiles]]\n[[profiles.select]]\n{U}"),
        ),
    ];
    for t in &tables {
        let toml = if matches!(t.as_str(), "routes" | "aggregates" | "profiles") {
            format!("[[{t}]]\n{U}")
        } else {
            nested(t)
        };
        checks.push((t.as_str(), t.as_str(), t.as_str(), toml));
    }
    let mut accepted =
        std::collections::BTreeMap::<&str, std::collections::BTreeSet<String>>::new();
    for (table, doc, ex, toml) in &checks {
        let keys = parser_keys(toml);
        assert!(!keys.is_empty(), "{table}");
        let documented = code_words(&docs[*doc]);
        let in_example = &example[*ex].0;
        for k in &keys {
            assert!(
                documented.contains(k),
                "`{table}.{k}` is not in docs/configuration.md"
            );
            assert!(
                in_example.contains(&format!("{k} ="))
                    || example.contains_key(&format!("{table}.{k}")),
                "`{table}.{k}` is not in examples/portcullis.toml"
            );
        }
        accepted
            .entry(doc)
            .or_default()
            .extend(keys.iter().cloned());
        accepted.entry(ex).or_default().extend(keys);
    }
    for (section, text) in &docs {
        for row in text.lines().filter(|l| l.starts_with("| `")) {
            for k in code_words(row.split('|').nth(1).unwrap_or_default()) {
                assert!(
                    accepted[section.as_str()].contains(&k),
                    "docs/configuration.md documents `{section}.{k}`, which the parser refuses"
                );
            }
        }
    }
    for (section, (_, keys)) in &example {
        for k in keys {
            assert!(
                section.is_empty() || accepted[section.as_str()].contains(k),
                "examples/portcullis.toml sets `{section}.{k}`, which the parser refuses"
            );
        }
    }
}

/// `oidc.id_token_signing_alg` and `oidc.token_endpoint_auth_method` name only what the gateway
/// can do: no `none`, no HMAC, no algorithm the JOSE libraries cannot verify.
#[test]
fn pinned_provider_choices_are_ones_the_gateway_supports() {
    for bad in ["none", "HS256", "ES512", "rs256"] {
        let err = Config::from_toml(&with_secrets(
            "",
            &format!("id_token_signing_alg = \"{bad}\""),
        ))
        .expect_err(bad)
        .to_string();
        assert!(err.contains("oidc.id_token_signing_alg"), "{bad}: {err}");
    }
    let c = Config::from_toml(&with_secrets("", "id_token_signing_alg = \"ES256\""))
        .expect("ES256 is supported");
    assert_eq!(c.oidc.id_token_signing_alg.as_deref(), Some("ES256"));
    let err = Config::from_toml(&with_secrets(
        "",
        "token_endpoint_auth_method = \"private_key_jwt\"",
    ))
    .expect_err("unsupported method")
    .to_string();
    assert!(err.contains("oidc.token_endpoint_auth_method"), "{err}");
}
