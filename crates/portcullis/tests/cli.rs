//! The command line: `gen-key`, `check-config` (every problem, exit 1), `serve` refusing a bad file.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn temp(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p
}

#[test]
fn gen_key_prints_a_fresh_32_byte_key() {
    let a = bin().arg("gen-key").output().expect("run");
    let b = bin().arg("gen-key").output().expect("run");
    assert!(a.status.success());
    let key = String::from_utf8(a.stdout).expect("utf8");
    let key = key.trim();
    assert_eq!(key.len(), 44, "base64 of 32 bytes");
    assert_ne!(key, String::from_utf8(b.stdout).expect("utf8").trim());
    assert!(portcullis::crypto::keyring::KeyRing::parse(key).is_ok());
}

#[test]
fn check_config_reports_every_problem_and_exits_1() {
    let cfg = temp(
        "bad.toml",
        r#"
[server]
listen = "not-an-address"
public_origin = "https://app.example.com/path"

[session]
cookie_name = "SessionID"
keys_env = "PORTCULLIS_CLI_TEST_UNSET_VARIABLE"

[oidc]
issuer = "ftp://idp"
client_id = "x"
client_secret_env = "PORTCULLIS_CLI_TEST_UNSET_VARIABLE"
"#,
    );
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "server.public_origin",
        "session.cookie_name",
        "session.keys",
        "oidc.issuer",
        "oidc.client_secret",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    let serve = bin()
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!serve.status.success(), "serve refuses an invalid config");
}

#[test]
fn check_config_accepts_a_valid_file() {
    let keys = temp(
        "keys",
        &portcullis::crypto::keyring::KeyRing::generate_encoded().expect("rng"),
    );
    let secret = temp("secret", "s3cret");
    let cfg = temp(
        "good.toml",
        &format!(
            r#"
[server]
listen = "127.0.0.1:8080"
public_origin = "https://app.example.com"

[session]
keys_file = "{}"

[oidc]
issuer = "https://idp.example.com"
client_id = "portcullis"
client_secret_file = "{}"

[[routes]]
prefix = "/api/orders"
upstream = "http://127.0.0.1:7001"
timeout = "10s"
"#,
            keys.display(),
            secret.display()
        ),
    );
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://app.example.com/bff/callback"));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let key = portcullis::crypto::keyring::KeyRing::generate_encoded().expect("rng");
    let out = bin()
        .current_dir(&root)
        .args(["check-config", "--config", "examples/portcullis.toml"])
        .env("PORTCULLIS_SESSION_KEYS", key)
        .env("PORTCULLIS_CLIENT_SECRET", "example-secret")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config whose secrets are files, listening where `server` says, with an unreachable issuer
/// (never contacted: these runs end before discovery starts).
fn serve_config(name: &str, server: &str, rest: &str) -> std::path::PathBuf {
    let keys = temp(
        &format!("{name}.keys"),
        &portcullis::crypto::keyring::KeyRing::generate_encoded().expect("rng"),
    );
    let secret = temp(&format!("{name}.secret"), "s3cret");
    temp(
        name,
        &format!(
            r#"
[server]
{server}
public_origin = "http://localhost:8080"

[session]
keys_file = "{}"

[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portcullis"
client_secret_file = "{}"
{rest}
"#,
            keys.display(),
            secret.display()
        ),
    )
}

/// Runs `serve`, which must exit by itself; killed (and the test failed) if it keeps running.
fn serve_until_exit(cfg: &std::path::Path) -> std::process::Output {
    let mut child = bin()
        .args(["serve", "--config"])
        .arg(cfg)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    for _ in 0..600 {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "serve kept running: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An operator whose port is taken learns which key and address, not only "Address already in
/// use".
#[test]
fn serve_names_the_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");

    let cfg = serve_config("taken.toml", &format!("listen = \"{addr}\""), "");
    let out = serve_until_exit(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("server.listen {addr}")) && err.contains("in use"),
        "{err}"
    );

    let cfg = serve_config(
        "admin-taken.toml",
        "listen = \"127.0.0.1:0\"",
        &format!(
            "[admin]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n",
            temp("admin-token", &"t".repeat(40)).display()
        ),
    );
    let out = serve_until_exit(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("admin.listen {addr}")), "{err}");
}

/// `check-config` passing means `serve` can start: TLS files that hold no usable certificate or
/// key are reported by both, with the key, before anything listens.
#[test]
fn check_config_reads_the_tls_files_serve_would_use() {
    let not_pem = temp("not-a-cert.pem", "just text\n");
    let cfg = serve_config(
        "bad-tls.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ntls = {{ cert_file = \"{0}\", key_file = \"{0}\" }}",
            not_pem.display()
        ),
        "",
    );
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("server.tls"), "{err}");
    let out = serve_until_exit(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("server.tls"), "{err}");
}

/// The memory store lives inside the running instance: the CLI refuses it (exit 1) and points to
/// the admin API, rather than answering 0 from an empty store of its own.
#[test]
fn sessions_cli_refuses_the_memory_store() {
    let cfg = serve_config("memory.toml", "listen = \"127.0.0.1:0\"", "");
    for args in [
        &["sessions", "list", "--subject", "alice"][..],
        &["sessions", "revoke", "--all"][..],
    ] {
        let out = bin()
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            err.contains("memory store") && err.contains("admin"),
            "{err}"
        );
    }
}
