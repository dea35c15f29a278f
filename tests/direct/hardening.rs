//! `cfimg serve` under hostile or careless clients (issue 18): one app cannot read another
//! app's drafts; silent, half-sent, idle and trickling connections are closed within their
//! (short, configured) timeouts; `/healthz` is answered at the connection cap; no app keys
//! is a start-up error. Connections are raw `TcpStream`s, read until the server closes
//! them, under an upper bound well above the configured timeout.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{APP_KEY, OTHER_KEY, serve};
use crate::common::TestEnv;

/// Far above every timeout the tests configure: a connection still open then was not cut.
const LIMIT: Duration = Duration::from_secs(15);

/// Reads until the server closes the connection (EOF or reset): what it sent, and when.
async fn read_to_close(s: &mut (impl AsyncRead + Unpin), since: Instant) -> (String, Duration) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(LIMIT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {LIMIT:?}; it sent {text:?}"
    );
    (text, since.elapsed())
}

/// Reads one answer on a kept-alive connection, up to the end of its `body_end`.
async fn read_answer(s: &mut TcpStream, body_end: &str) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, async {
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).ends_with(body_end) {
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an answer");
    String::from_utf8_lossy(&got).into_owned()
}

async fn connect(origin: &str) -> TcpStream {
    TcpStream::connect(origin.trim_start_matches("http://"))
        .await
        .expect("connects")
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: cfimg\r\n\r\n";

#[tokio::test]
async fn an_app_key_reads_only_the_drafts_of_its_own_app() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", false).await;
    let (id, _) = srv
        .mint_ok(json!({ "creator": "user-7", "metadata": { "secret-album": "cats" } }))
        .await;
    let (status, body) = get_as(&srv, APP_KEY, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["app"], "web");
    // Another app: 404, exactly as for an id nobody minted, and nothing of the draft.
    let (status, body) = get_as(&srv, OTHER_KEY, &id).await;
    assert_eq!(status, 404, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("user-7") && !text.contains("secret-album") && !text.contains("web"),
        "{text}"
    );
    let (missing_status, missing) = get_as(&srv, OTHER_KEY, "never-minted").await;
    assert_eq!(missing_status, 404);
    assert_eq!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&id, "ID"),
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .replace("never-minted", "ID"),
    );
    srv.stop().await;
}

/// `GET /v1/direct-uploads/{id}` with `key`: (status, body).
async fn get_as(srv: &super::Serve, key: &str, id: &str) -> (u16, serde_json::Value) {
    let resp = srv
        .http
        .get(format!("{}/v1/direct-uploads/{id}", srv.origin))
        .bearer_auth(key)
        .send()
        .await
        .expect("answers");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn silent_and_idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let env = TestEnv::new().await;
    let srv = serve(
        &env,
        "idle_timeout_secs = 0.5\nheader_timeout_secs = 30\n",
        false,
    )
    .await;
    // A connection that never says a word.
    let start = Instant::now();
    let mut silent = connect(&srv.origin).await;
    let (sent, took) = read_to_close(&mut silent, start).await;
    assert_eq!(sent, "");
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");

    // A kept-alive connection after its answer.
    let mut kept = connect(&srv.origin).await;
    kept.write_all(HEALTH).await.unwrap();
    let answer = read_answer(&mut kept, "ok\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let start = Instant::now();
    let (rest, took) = read_to_close(&mut kept, start).await;
    assert_eq!(rest, "");
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");
    srv.stop().await;
}

#[tokio::test]
async fn a_request_head_sent_slowly_is_cut_off_by_the_header_timeout() {
    let env = TestEnv::new().await;
    // The idle clock is long: only the head clock can end these connections.
    let srv = serve(
        &env,
        "idle_timeout_secs = 60\nheader_timeout_secs = 1\n",
        false,
    )
    .await;

    // Half a head, then silence.
    let start = Instant::now();
    let mut half = connect(&srv.origin).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: cfimg\r\n")
        .await
        .unwrap();
    let (sent, took) = read_to_close(&mut half, start).await;
    assert!(!sent.contains(" 200 "), "{sent}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // A head trickled a header line every 100 ms (slowloris): bytes keep coming, the head
    // never completes.
    let start = Instant::now();
    let (mut rd, mut wr) = connect(&srv.origin).await.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(b"GET /healthz HTTP/1.1\r\n").await.is_err() {
            return;
        }
        for i in 0..1000 {
            let line = format!("X-Slow-{i}: a\r\n");
            if wr.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (sent, took) = read_to_close(&mut rd, start).await;
    writer.abort();
    assert!(!sent.contains(" 200 "), "{sent}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    srv.stop().await;
}

#[tokio::test]
async fn a_body_trickled_or_stalled_is_answered_408_and_closed() {
    let env = TestEnv::new().await;
    let srv = serve(
        &env,
        "idle_timeout_secs = 60\nheader_timeout_secs = 60\nbody_timeout_secs = 1\nrequest_timeout_secs = 2\n",
        false,
    )
    .await;
    let head = format!(
        "POST /v1/direct-uploads HTTP/1.1\r\nHost: cfimg\r\nAuthorization: Bearer {APP_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );

    // One byte every 100 ms: every piece is in time, the whole request is not.
    let start = Instant::now();
    let (mut rd, mut wr) = connect(&srv.origin).await.into_split();
    let trickle_head = head.clone();
    let writer = tokio::spawn(async move {
        if wr.write_all(trickle_head.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..1000 {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (sent, took) = read_to_close(&mut rd, start).await;
    writer.abort();
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.contains("too slowly"), "{sent}");
    assert!(took >= Duration::from_millis(1900), "closed after {took:?}");

    // Ten bytes, then nothing: the body clock.
    let start = Instant::now();
    let mut stalled = connect(&srv.origin).await;
    stalled
        .write_all(format!("{head}{{\"creator\"").as_bytes())
        .await
        .unwrap();
    let (sent, took) = read_to_close(&mut stalled, start).await;
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "closed after {took:?}"
    );
    assert_eq!(super::mints_seen(&env), 0);
    srv.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room_and_healthz_is_still_answered() {
    let env = TestEnv::new().await;
    let srv = serve(
        &env,
        "max_connections = 3\nidle_timeout_secs = 60\nheader_timeout_secs = 60\n\
         body_timeout_secs = 60\nrequest_timeout_secs = 60\n",
        false,
    )
    .await;
    // Three kept-alive connections, each known to hold a slot (it was answered).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect(&srv.origin).await;
        c.write_all(HEALTH).await.unwrap();
        assert!(
            read_answer(&mut c, "ok\n")
                .await
                .starts_with("HTTP/1.1 200")
        );
        held.push(c);
    }
    // At the cap, a newcomer closes the connection idle for longest and is served.
    let mut newcomer = connect(&srv.origin).await;
    newcomer.write_all(HEALTH).await.unwrap();
    assert!(
        read_answer(&mut newcomer, "ok\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut oldest = held.remove(0);
    let (rest, _) = read_to_close(&mut oldest, Instant::now()).await;
    assert_eq!(rest, "");
    held.push(newcomer);

    // Now every slot has a request in progress (a body that has not arrived yet; the
    // 100 Continue shows the handler is reading it): nothing can be closed to make room.
    let post = format!(
        "POST /v1/direct-uploads HTTP/1.1\r\nHost: cfimg\r\nAuthorization: Bearer {APP_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    );
    for c in &mut held {
        c.write_all(post.as_bytes()).await.unwrap();
        assert!(read_answer(c, "\r\n\r\n").await.starts_with("HTTP/1.1 100"));
    }
    // /healthz is answered, then closed; anything else is 503 and closed.
    let start = Instant::now();
    let mut probe = connect(&srv.origin).await;
    probe.write_all(HEALTH).await.unwrap();
    let (sent, _) = read_to_close(&mut probe, start).await;
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert!(sent.ends_with("ok\n"), "{sent}");
    let mut other = connect(&srv.origin).await;
    other
        .write_all(b"GET /openapi.json HTTP/1.1\r\nHost: cfimg\r\n\r\n")
        .await
        .unwrap();
    let (sent, _) = read_to_close(&mut other, start).await;
    assert!(sent.starts_with("HTTP/1.1 503"), "{sent}");
    assert!(
        sent.to_ascii_lowercase().contains("retry-after: 1"),
        "{sent}"
    );
    assert!(
        srv.log_text().contains("the connection limit is reached"),
        "{}",
        srv.log_text()
    );
    // The requests in progress were not cut: they finish.
    for c in &mut held {
        c.write_all(b"{}").await.unwrap();
        let answer = read_answer(c, "}").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn serve_without_app_keys_or_with_a_cap_past_the_file_limit_stops_with_exit_2() {
    let env = TestEnv::new().await;
    let run = |env: &TestEnv| {
        let mut cmd = env.cmd(&["serve", "--listen", "127.0.0.1:0"]);
        async move {
            tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .expect("cfimg serve exits")
                .expect("cfimg runs")
        }
    };
    let out = run(&env).await;
    assert_eq!(out.status.code(), Some(2), "{}", crate::common::text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no app keys")
            && err.contains("serve.app_keys_file")
            && err.contains("--demo"),
        "{err}"
    );
    assert_eq!(
        env.api_requests("GET", "v1/stats"),
        0,
        "stopped before any request"
    );

    // Reserved app names, and a cap the open-file limit cannot hold.
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str(&format!(
        "\n[serve]\napp_keys = {{ cli = \"{APP_KEY}\" }}\nmax_connections = 100000000\n"
    ));
    std::fs::write(&env.config, config).unwrap();
    let out = run(&env).await;
    assert_eq!(out.status.code(), Some(2), "{}", crate::common::text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"cli\" is reserved"), "{err}");
    let config = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("cli =", "web =");
    std::fs::write(&env.config, config).unwrap();
    let out = run(&env).await;
    assert_eq!(out.status.code(), Some(2), "{}", crate::common::text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serve.max_connections") && err.contains("LimitNOFILE"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_does_not_wait_for_silent_or_half_sent_connections() {
    let env = TestEnv::new().await;
    let mut srv = serve(
        &env,
        "idle_timeout_secs = 60\nheader_timeout_secs = 60\n",
        false,
    )
    .await;
    let _silent = connect(&srv.origin).await;
    let mut half = connect(&srv.origin).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: cfimg\r\n")
        .await
        .unwrap();
    let mut kept = connect(&srv.origin).await;
    kept.write_all(HEALTH).await.unwrap();
    read_answer(&mut kept, "ok\n").await;
    let pid = srv.child.id().expect("running");
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(LIMIT, srv.child.wait())
        .await
        .expect("cfimg serve exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", srv.log_text());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
