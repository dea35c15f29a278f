//! A listing command whose server closes the connection mid-write (here: https spoken to a
//! plain-HTTP server) reports the failure, with its cause, instead of dying silently of
//! SIGPIPE (status 141): only a closed stdout or stderr ends it that way.

use std::os::unix::process::ExitStatusExt;

use crate::common::{TestEnv, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closed_mid_write_is_an_error_not_a_silent_sigpipe() {
    let env = TestEnv::new().await;
    let plain = env.emu.api_base();
    let tls = plain.replacen("http://", "https://", 1);
    let config = std::fs::read_to_string(&env.config).unwrap();
    assert!(config.contains(&plain), "{config}");
    std::fs::write(&env.config, config.replace(&plain, &tls)).unwrap();

    for args in [&["images", "list"][..], &["variants", "list"]] {
        let out = env.run(args).await;
        assert_eq!(out.status.signal(), None, "{args:?}: {:?}", out.status);
        assert_eq!(out.status.code(), Some(75), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        let host = plain
            .trim_start_matches("http://")
            .trim_end_matches("/client/v4");
        assert!(
            err.contains(&format!("cannot connect to {host}: TLS handshake failed")),
            "{args:?}: {err}"
        );
    }
}
