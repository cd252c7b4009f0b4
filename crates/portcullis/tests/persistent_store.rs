//! The file-backed embedded store: sessions survive a restart of the instance.

mod common;

use common::{COOKIE, Options, Stack};
use testkit::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_restart_with_the_file_store() {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-file-store-{}",
        portcullis::crypto::random::token::<6>().expect("rng")
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("sessions.redb");
    let mut stack = Stack::start_with(Options {
        session_extra: format!("store = \"file\"\nfile_path = \"{}\"", file.display()),
        ..Options::default()
    })
    .await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let csrf = stack.csrf(&b).await;

    stack.restart(0).await;

    let cookie = format!("{COOKIE}={ticket}");
    let s = b
        .get_with(&stack.url("/bff/session"), &[("cookie", &cookie)])
        .await
        .expect("session");
    assert_eq!(
        s.status.as_u16(),
        200,
        "the session outlived the restart: {}",
        s.text()
    );
    assert_eq!(s.json().expect("json")["csrfToken"], csrf.as_str());
    let api = b
        .get_with(&stack.url("/api/orders/1"), &[("cookie", &cookie)])
        .await
        .expect("api");
    assert_eq!(api.status.as_u16(), 200);
    // The file holds no token or ticket in clear.
    let record = stack.session_record(&ticket).await.expect("session").record;
    drop(stack);
    let bytes = std::fs::read(&file).expect("read store file");
    for secret in [record.access_token.as_str(), ticket.as_str(), csrf.as_str()] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret is in the file in clear"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
