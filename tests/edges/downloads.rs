//! Downloads are bounded in time, not only in size (issue 18.7): a trickling origin is cut
//! off by the rate floor with a recorded reason, and a stop signal abandons downloads in
//! flight at once instead of waiting for them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use cfimg::emulator::EmulatorConfig;

use crate::common::origin::Origin;
use crate::common::{TestEnv, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_origin_is_cut_off_by_the_rate_floor_with_a_reason() {
    let env = TestEnv::new().await;
    let origin = Origin::start().await;
    // One byte every 50 ms: 20 B/s, under a floor of 100 bytes per second.
    let url = origin.url("/trickle/50/slow.png");
    let list = env.dir.path().join("urls.txt");
    std::fs::write(&list, format!("{url}\n")).unwrap();
    let started = Instant::now();
    let out = env
        .run(&[
            "migrate",
            "--manifest",
            list.to_str().unwrap(),
            "--url-mode",
            "local",
            "--download-floor-bytes",
            "100",
            "--download-floor-window",
            "1",
            "--json",
        ])
        .await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // Not retried within the run: a trickle is a trickle again at once.
    assert_eq!(origin.hits("/trickle/50/slow.png"), 1);
    let f = env.run(&["failures", "--json"]).await;
    let rows: Value = serde_json::from_slice(&f.stdout).unwrap_or(Value::Null);
    let reason = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["key"] == url.as_str()))
        .and_then(|r| r["reason"].as_str())
        .unwrap_or_else(|| panic!("{}", text(&f)))
        .to_string();
    assert!(
        reason.contains("too slow") && reason.contains("under the floor of 100 bytes"),
        "{reason}"
    );
    assert_eq!(env.upload_posts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_trickling_download_exits_within_the_grace() {
    let env = TestEnv::with(
        EmulatorConfig {
            api_rate_limit: None,
            batch_rate_limit: None,
            ..EmulatorConfig::default()
        },
        "shutdown_grace_secs = 5",
    )
    .await;
    let origin = Origin::start().await;
    // 10 bytes/s keeps above a floor of 1 byte per window: only the stop can end it.
    let path = "/trickle/100/slow.png";
    let list = env.dir.path().join("urls.txt");
    std::fs::write(&list, format!("{}\n", origin.url(path))).unwrap();
    let mut child = env
        .cmd(&[
            "migrate",
            "--manifest",
            list.to_str().unwrap(),
            "--url-mode",
            "local",
            "--download-floor-bytes",
            "1",
            "--download-deadline",
            "600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while origin.hits(path) == 0 {
        assert!(Instant::now() < until, "the download never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = Pid::from_raw(child.id().expect("pid") as i32);
    let signalled = Instant::now();
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within the 5 s grace")
        .unwrap();
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130));
}

/// A bucket whose one object trickles: just enough of S3 for a listing and a GET.
async fn trickling_bucket() -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::{StatusCode, Uri, header};
    use axum::response::IntoResponse;
    async fn answer(uri: Uri) -> axum::response::Response {
        if uri.path() == "/photos" || uri.path() == "/photos/" {
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                <Name>photos</Name><Prefix></Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>\
                <IsTruncated>false</IsTruncated><Contents><Key>slow.png</Key>\
                <LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"e1\"</ETag>\
                <Size>5000</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>";
            return ([(header::CONTENT_TYPE, "application/xml")], xml).into_response();
        }
        if uri.path() == "/photos/slow.png" {
            let head = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n"))
            });
            let drip = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok(bytes::Bytes::from_static(b"\0")), ()))
            });
            let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(head, drip));
            return (
                [
                    (header::CONTENT_LENGTH, "5000"),
                    (header::ETAG, "\"e1\""),
                    (header::LAST_MODIFIED, "Thu, 01 Jan 2026 00:00:00 GMT"),
                ],
                body,
            )
                .into_response();
        }
        StatusCode::NOT_FOUND.into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().fallback(answer)).await;
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_bucket_object_is_cut_off_by_the_rate_floor() {
    let env = TestEnv::new().await;
    let (endpoint, server) = trickling_bucket().await;
    let started = Instant::now();
    let out = env
        .cmd(&[
            "migrate",
            "s3://photos",
            "--endpoint-url",
            &endpoint,
            "--region",
            "eu-west-3",
            "--download-floor-bytes",
            "100",
            "--download-floor-window",
            "1",
            "--json",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDTRICKLE")
        .env("AWS_SECRET_ACCESS_KEY", "trickle-secret")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .await
        .unwrap();
    server.abort();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let f = env.run(&["failures", "--json"]).await;
    let rows: Value = serde_json::from_slice(&f.stdout).unwrap_or(Value::Null);
    let reason = rows[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("slow.png") && reason.contains("under the floor of 100 bytes"),
        "{}",
        text(&f)
    );
}
