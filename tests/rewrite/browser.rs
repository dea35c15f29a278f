//! A real browser on a rewritten page: an old site (served on 127.0.0.1:0) whose `img`,
//! `srcset` and CSS backgrounds point at its own uploads folder is rewritten by
//! `cfimg rewrite`; headless Chromium then loads it, every image element has loaded
//! (`naturalWidth > 0`) from the emulator's delivery route, and the old host served no image.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::common::{TestEnv, png, text};
use crate::direct::browser::{Cdp, chromium, devtools_port};

/// The old site: files from a folder, and a count of the image requests it answered.
struct OldSite {
    addr: std::net::SocketAddr,
    image_hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OldSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn old_site(root: PathBuf) -> OldSite {
    let image_hits = Arc::new(AtomicU64::new(0));
    let hits = image_hits.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let (root, hits) = (root.clone(), hits.clone());
        async move {
            let path = uri.path().trim_start_matches('/').to_string();
            let kind = match path.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("css") => "text/css",
                _ => "image/png",
            };
            if path.starts_with("wp-content/") {
                hits.fetch_add(1, Ordering::SeqCst);
            }
            match std::fs::read(root.join(&path)) {
                Ok(body) if !path.contains("..") => {
                    ([(header::CONTENT_TYPE, kind)], body).into_response()
                }
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("old site binds");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    OldSite {
        addr,
        image_hits,
        task,
    }
}

#[tokio::test]
async fn chromium_loads_every_image_of_a_rewritten_page_from_the_delivery_route() {
    let Some(browser) = chromium() else {
        if std::env::var("CFIMG_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("skipped: no Chromium and CFIMG_SKIP_BROWSER=1");
            return;
        }
        panic!(
            "Chromium is not installed: `apt-get install -y --no-install-recommends chromium` \
             (as .ci/run does), point CFIMG_CHROMIUM at a Chrome binary, or set \
             CFIMG_SKIP_BROWSER=1 to skip this test explicitly"
        );
    };
    let env = TestEnv::new().await;
    // The old site serves its uploads itself: the page works before the rewrite too.
    let www = env.dir.path().join("www");
    for (i, k) in ["a.png", "b-320.png", "b-640.png", "bg.png", "bg2.png"]
        .iter()
        .enumerate()
    {
        crate::common::write_in(
            &www,
            &format!("wp-content/uploads/2019/{k}"),
            &png(i as u32, 400),
        );
    }
    let (code, _, out) = env.migrate_dir(&www.join("wp-content/uploads"), &[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let out = env.run(&["flexible-variants", "on"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let site = old_site(www.clone()).await;
    let host = site.addr.to_string();
    let base = format!("http://{host}/wp-content/uploads/");
    crate::common::write_in(
        &www,
        "page.html",
        format!(
            "<!doctype html><html><head><link rel=stylesheet href=\"/site.css\">\n\
             <style>#hero {{ width: 10px; height: 10px; background-image: url('/wp-content/uploads/2019/bg.png'); }}</style></head>\n\
             <body><img id=a src=\"{base}2019/a.png\">\n\
             <img id=b src=\"//{host}/wp-content/uploads/2019/b-320.png\" srcset=\"{base}2019/b-320.png 320w, {base}2019/b-640.png 640w\" sizes=\"320px\">\n\
             <div id=hero></div><div id=hero2></div></body></html>\n"
        )
        .as_bytes(),
    );
    crate::common::write_in(
        &www,
        "site.css",
        format!(
            "#hero2 {{ width: 10px; height: 10px; background: url(\"{base}2019/bg2.png\"); }}\n"
        )
        .as_bytes(),
    );
    let out = env
        .run(&[
            "rewrite",
            "--old-base",
            &base,
            "--in-place",
            "--srcset-widths",
            "--journal",
            env.dir.path().join("j").to_str().unwrap(),
            www.join("page.html").to_str().unwrap(),
            www.join("site.css").to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(www.join("page.html")).unwrap();
    assert!(!page.contains("wp-content"), "{page}");
    assert!(page.contains("/w=640 640w"), "{page}");

    let dir = tempfile::tempdir().expect("temp dir");
    let profile = dir.path().join("chromium-profile");
    let log = dir.path().join("chromium.log");
    let _chrome = tokio::process::Command::new(&browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", browser.display()));
    let port = devtools_port(&profile.join("DevToolsActivePort"), &log).await;
    let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .expect("DevTools HTTP")
        .json()
        .await
        .expect("targets");
    let ws_url = targets
        .iter()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let (ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("DevTools socket");
    let mut cdp = Cdp { ws, next: 0 };
    cdp.call(
        "Page.navigate",
        json!({ "url": format!("http://{host}/page.html") }),
    )
    .await;

    // Every image element loaded, and both backgrounds fetched.
    let probe = "JSON.stringify({ ready: document.readyState, \
                 images: Array.from(document.images).map(i => ({ id: i.id, complete: i.complete, width: i.naturalWidth, src: i.currentSrc })), \
                 fetched: performance.getEntriesByType('resource').map(e => e.name) })";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let v: Value = serde_json::from_str(cdp.eval(probe).await.as_str().unwrap_or("{}"))
            .unwrap_or_default();
        let images = v["images"].as_array().cloned().unwrap_or_default();
        let fetched = v["fetched"].as_array().cloned().unwrap_or_default();
        let done = v["ready"] == "complete"
            && images.len() == 2
            && images.iter().all(|i| i["complete"] == true)
            && fetched
                .iter()
                .filter(|f| f.as_str().is_some_and(|f| f.contains("/cdn/")))
                .count()
                >= 4;
        if done {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page did not load: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for img in seen["images"].as_array().unwrap() {
        assert!(
            img["width"].as_u64().is_some_and(|w| w > 0),
            "{img} loaded: {seen}"
        );
        let src = img["src"].as_str().unwrap_or_default();
        assert!(
            src.contains("/cdn/") && !src.contains(&host),
            "{img} from the delivery route"
        );
    }
    for f in seen["fetched"].as_array().unwrap() {
        let f = f.as_str().unwrap_or_default();
        assert!(
            !f.contains("wp-content"),
            "{f} fetched from the old host: {seen}"
        );
    }
    assert_eq!(
        site.image_hits.load(Ordering::SeqCst),
        0,
        "the old host served no image: {seen}"
    );
}
