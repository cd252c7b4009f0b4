//! Validation of `[[aggregates]]`, `[[profiles]]` and the route policy keys.

use super::super::{Config, Problems, compose::AggregateConfig};
use crate::crypto::keyring::KeyRing;

fn load(rest: &str) -> Result<Config, Problems> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("portcullis-compose-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let (keys, secret) = (dir.join("keys"), dir.join("secret"));
    std::fs::write(&keys, KeyRing::generate_encoded().expect("rng")).expect("write");
    std::fs::write(&secret, "s3cret").expect("write");
    Config::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:8080"
public_origin = "http://localhost:8080"
[session]
keys_file = "{keys}"
[oidc]
issuer = "http://127.0.0.1:9000"
client_id = "portcullis"
client_secret_file = "{secret}"
[[routes]]
prefix = "/api/orders"
upstream = "http://127.0.0.1:7001/orders"
timeout = "3s"
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:7002"
{rest}
"#,
        keys = keys.display(),
        secret = secret.display()
    ))
}

fn problems(rest: &str) -> Vec<String> {
    match load(rest) {
        Ok(_) => Vec::new(),
        Err(p) => p.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn aggregates_resolve_their_routes_and_defaults() {
    let c = load(
        r#"
[[routes]]
prefix = "/pub"
upstream = "http://127.0.0.1:7003"
public = true
methods = ["GET", "POST"]
[[aggregates]]
path = "/api/users/{id}/home"
[[aggregates.parts]]
name = "orders"
path = "/api/orders?user={sub}&g={claims.tenant}"
required = false
[[aggregates.parts]]
name = "card"
path = "/api/cards/{path.id}"
timeout = "1s"
"#,
    )
    .expect("valid");
    let a = &c.compose.aggregates[0];
    assert_eq!(a.parts[0].route, "/api/orders");
    assert_eq!(a.parts[0].timeout, std::time::Duration::from_secs(3));
    assert!(!a.parts[0].required && a.parts[1].required);
    assert_eq!(a.parts[1].route, "/api");
    assert_eq!(a.parts[0].max_size, 1024 * 1024);
    assert_eq!(
        c.compose.claims_needed(&c.routes),
        vec!["tenant".to_owned()]
    );
    let public = c.routes.iter().find(|r| r.prefix == "/pub").expect("route");
    assert!(public.policy.public);
    assert_eq!(public.policy.methods.as_ref().map(Vec::len), Some(2));
}

#[test]
fn invalid_composition_is_reported_per_key() {
    let cases = [
        (
            "[[aggregates]]\npath = \"/dash\"\n[[aggregates.parts]]\nname = \"x\"\npath = \"/other/{sub}\"",
            "aggregates[0].parts[0].path",
        ),
        (
            "[[aggregates]]\npath = \"/dash\"\n[[aggregates.parts]]\nname = \"_errors\"\npath = \"/api/x\"",
            "aggregates[0].parts[0].name",
        ),
        (
            "[[aggregates]]\npath = \"/dash\"\n[[aggregates.parts]]\nname = \"x\"\npath = \"/api/{path.id}\"",
            "aggregates[0].parts[0].path",
        ),
        (
            "[[aggregates]]\npath = \"/a/{x}\"\n[[aggregates.parts]]\nname = \"x\"\npath = \"/api/x\"\n[[aggregates]]\npath = \"/a/{y}\"\n[[aggregates.parts]]\nname = \"x\"\npath = \"/api/x\"",
            "aggregates[1].path",
        ),
        ("[[aggregates]]\npath = \"/bff/x\"", "aggregates[0].path"),
        (
            "[[profiles]]\nname = \"m\"\n[[profiles.select]]\nroute = \"/api\"\nfields = [\"items[0\"]",
            "profiles[0].select[0].fields",
        ),
        (
            "[[profiles]]\nname = \"m\"\n[[profiles.select]]\nroute = \"/nope\"\nfields = [\"$.a\"]",
            "profiles[0].select[0].route",
        ),
        (
            "[[routes]]\nprefix = \"/p\"\nupstream = \"http://127.0.0.1:1\"\nprofile = \"nope\"",
            "routes[2].profile",
        ),
        (
            "[[routes]]\nprefix = \"/p\"\nupstream = \"http://127.0.0.1:1\"\npublic = true\nrequire_scopes = [\"a\"]",
            "routes[2].public",
        ),
        (
            "[[routes]]\nprefix = \"/p\"\nupstream = \"http://127.0.0.1:1\"\nmethods = [\"get\"]",
            "routes[2].methods",
        ),
    ];
    for (toml, key) in cases {
        let found = problems(toml);
        assert!(
            found.iter().any(|p| p.starts_with(&format!("{key}:"))),
            "{toml}: expected a problem at {key}, got {found:?}"
        );
    }
}

#[test]
fn aggregate_paths_match_segment_by_segment() {
    let agg = |path: &str| AggregateConfig {
        path: path.into(),
        parts: Vec::new(),
        max_total: 1,
        profile: None,
    };
    let card = agg("/home/{id}/card");
    for yes in ["/home/7/card", "/home/a%2Fb/card"] {
        assert!(card.matches(yes), "{yes}");
    }
    for no in [
        "/home//card",
        "/home/7",
        "/home/7/card/",
        "/home/7/card/x",
        "/home/7/cards",
        "/",
    ] {
        assert!(!card.matches(no), "{no}");
    }
    assert!(agg("/dash").matches("/dash"));
    assert!(!agg("/dash").matches("/dash/"));
}
