//! Each fault knob, with probability 1 so the outcome is certain.

use std::time::{Duration, Instant};

use cfimg::emulator::Faults;

use super::{Emu, code, file_part, png, status_json};
use reqwest::multipart::Form;

fn upload_form(id: &str) -> Form {
    Form::new()
        .part("file", file_part(png(1), "f.png"))
        .text("id", id.to_owned())
}

#[tokio::test]
async fn edge_errors_500_502_503() {
    let emu = Emu::start().await;
    emu.handle.set_faults(Faults {
        p_500: 1.0,
        ..Faults::default()
    });
    let (status, body) = status_json(emu.get("/v1/stats").send().await.unwrap()).await;
    assert_eq!(status, 500);
    assert_eq!(body["success"], false);
    for (faults, want) in [
        (
            Faults {
                p_502: 1.0,
                seed: 1,
                ..Faults::default()
            },
            502,
        ),
        (
            Faults {
                p_503: 1.0,
                seed: 1,
                ..Faults::default()
            },
            503,
        ),
    ] {
        emu.handle.set_faults(faults);
        let mut html = 0;
        for _ in 0..20 {
            let resp = emu.get("/v1/stats").send().await.unwrap();
            assert_eq!(resp.status(), want);
            let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
            let text = resp.text().await.unwrap();
            if ct == "text/html" {
                assert!(text.contains("cloudflare"));
                html += 1;
            } else {
                assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
            }
        }
        assert!(html > 0 && html < 20, "a mix of HTML and JSON: {html}/20");
    }
    // Off again: the same request succeeds.
    emu.handle.set_faults(Faults::default());
    assert_eq!(emu.get("/v1/stats").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn drop_before_store_stores_nothing() {
    let emu = Emu::start().await;
    emu.handle.set_faults(Faults {
        p_drop_before_store: 1.0,
        ..Faults::default()
    });
    let err = emu
        .req(reqwest::Method::POST, "/v1")
        .multipart(upload_form("d1.png"))
        .send()
        .await;
    assert!(err.is_err(), "connection dropped");
    // Non-upload routes are unaffected by the drop knobs.
    assert_eq!(emu.get("/v1/stats").send().await.unwrap().status(), 200);
    let state = emu.handle.inspect();
    assert!(state.images.is_empty());
    assert!(
        state
            .requests
            .iter()
            .any(|r| r.route.ends_with("images/v1") && r.status == 0)
    );
}

#[tokio::test]
async fn drop_after_store_keeps_the_image() {
    let emu = Emu::start().await;
    emu.handle.set_faults(Faults {
        p_drop_after_store: 1.0,
        ..Faults::default()
    });
    let err = emu
        .req(reqwest::Method::POST, "/v1")
        .multipart(upload_form("d2.png"))
        .send()
        .await;
    assert!(err.is_err(), "connection dropped");
    emu.handle.set_faults(Faults::default());
    assert_eq!(emu.get("/v1/d2.png").send().await.unwrap().status(), 200);
    // A retry meets 5409, as it would at Cloudflare.
    let (status, body) = emu.upload(upload_form("d2.png")).await;
    assert_eq!((status, code(&body)), (409, 5409));
}

#[tokio::test]
async fn store_then_500_keeps_the_image() {
    let emu = Emu::start().await;
    emu.handle.set_faults(Faults {
        p_store_then_500: 1.0,
        ..Faults::default()
    });
    let (status, _) = emu.upload(upload_form("s5.png")).await;
    assert_eq!(status, 500);
    emu.handle.set_faults(Faults::default());
    assert_eq!(emu.get("/v1/s5.png").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn latency_delays_answers() {
    let emu = Emu::start().await;
    emu.handle.set_faults(Faults {
        p_latency: 1.0,
        latency_ms: 200,
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(emu.get("/v1/stats").send().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn faults_over_http_and_seeded_reproduction() {
    let emu = Emu::start().await;
    let url = format!("{}/__emulator/faults", emu.handle.batch_base());
    let faults = Faults {
        seed: 42,
        p_500: 0.5,
        ..Faults::default()
    };
    let run = || async {
        let resp = emu.http.put(&url).json(&faults).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut seq = Vec::new();
        for _ in 0..30 {
            seq.push(emu.get("/v1/stats").send().await.unwrap().status().as_u16());
        }
        seq
    };
    let first = run().await;
    assert!(first.contains(&500) && first.contains(&200));
    assert_eq!(first, run().await);
    let state: serde_json::Value = emu
        .http
        .get(format!("{}/__emulator/state", emu.handle.batch_base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(state["requests"].as_array().unwrap().len() >= 2);
}
