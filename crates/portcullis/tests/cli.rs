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
