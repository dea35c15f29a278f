//! A file still being written when `--max-settle` is over is sent only once it is a complete
//! image: an SVG whose root element is not closed yet, or an AVIF whose boxes do not add up
//! to the file yet, is held back until it changes again. `migrate` refuses both locally.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Daemon, stored, until, uploaded_as};
use crate::common::TestEnv;
use crate::common::formats::{SVG_HEAD, SVG_TAIL, avif, avif_head, svg, svg_rect};

const WAIT: Duration = Duration::from_secs(30);

/// Appends `chunk(i)` to `path` every 100 ms until `stop`: a writer that never lets the file
/// settle, so only the maximum wait can end its wait. Returns how many chunks went in.
fn keep_appending(
    path: &Path,
    stop: &CancellationToken,
    chunk: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> tokio::task::JoinHandle<usize> {
    let (path, stop) = (path.to_path_buf(), stop.clone());
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.is_cancelled() {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(&chunk(n)).unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n
    })
}

/// Writes `head`, keeps appending past `--max-settle` until the daemon says it held the file
/// back, then completes it with `tail(chunks written)`; returns the complete bytes.
async fn write_slowly(
    d: &Daemon,
    path: &Path,
    key: &str,
    head: &[u8],
    chunk: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> usize {
    std::fs::write(path, head).unwrap();
    let stop = CancellationToken::new();
    let writer = keep_appending(path, &stop, chunk);
    until("the incomplete file held back", WAIT, || {
        d.log_text()
            .lines()
            .any(|l| l.contains("holding back") && l.contains(key))
    })
    .await;
    stop.cancel();
    writer.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_written_svg_past_max_settle_waits_until_complete() {
    let env = TestEnv::new().await;
    let d = Daemon::start(&env, &["--settle", "1", "--max-settle", "1"]).await;
    let path = env.src.join("slow.svg");
    let chunks = write_slowly(&d, &path, "slow.svg", SVG_HEAD.as_bytes(), |i| {
        svg_rect(i).into_bytes()
    })
    .await;
    assert_eq!(env.upload_posts(), 0, "a partial SVG was sent");
    // Completed: the whole document goes, once.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(SVG_TAIL.as_bytes()).unwrap();
    drop(f);
    let complete = svg(chunks);
    assert_eq!(std::fs::read(&path).unwrap(), complete);
    until("slow.svg uploaded complete", WAIT, || {
        uploaded_as(&env, "slow.svg", &path)
    })
    .await;
    assert!(
        stored(&env, &complete),
        "the stored bytes are the whole file"
    );
    assert_eq!(env.upload_posts(), 1, "only the complete file was sent");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_written_avif_past_max_settle_waits_until_complete() {
    const DATA: usize = 64 * 1024;
    const CHUNK: usize = 256;
    let env = TestEnv::new().await;
    let d = Daemon::start(&env, &["--settle", "1", "--max-settle", "1"]).await;
    let path = env.src.join("slow.avif");
    let whole = avif(5, DATA);
    let head_len = avif_head(DATA).len();
    let body = whole[head_len..].to_vec();
    let chunks = write_slowly(&d, &path, "slow.avif", &whole[..head_len], move |i| {
        body[(i * CHUNK).min(DATA - 1)..((i + 1) * CHUNK).min(DATA - 1)].to_vec()
    })
    .await;
    assert!(
        chunks * CHUNK < DATA,
        "the writer finished the file on its own"
    );
    assert_eq!(env.upload_posts(), 0, "a partial AVIF was sent");
    let written = std::fs::metadata(&path).unwrap().len() as usize;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&whole[written..]).unwrap();
    drop(f);
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    until("slow.avif uploaded complete", WAIT, || {
        uploaded_as(&env, "slow.avif", &path)
    })
    .await;
    assert!(stored(&env, &whole), "the stored bytes are the whole file");
    assert_eq!(env.upload_posts(), 1, "only the complete file was sent");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_truncated_svg_and_avif_locally() {
    let env = TestEnv::new().await;
    let good_svg = svg(5);
    let good_avif = avif(1, 500);
    env.write("good.svg", &good_svg);
    env.write("good.avif", &good_avif);
    env.write("cut.svg", &good_svg[..good_svg.len() - 10]);
    env.write("cut.avif", &good_avif[..good_avif.len() - 100]);
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "{}", crate::common::text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let out = env.run(&["failures", "--json"]).await;
    let failures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = |key: &str| -> String {
        failures
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .map(|f| f["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{key} not in {failures}"))
    };
    let svg_why = reason("cut.svg");
    assert!(
        svg_why.contains("9422") && svg_why.contains("SVG") && svg_why.contains("truncated"),
        "{svg_why}"
    );
    let avif_why = reason("cut.avif");
    assert!(
        avif_why.contains("9422") && avif_why.contains("mdat") && avif_why.contains("truncated"),
        "{avif_why}"
    );
    assert_eq!(env.upload_posts(), 2, "a truncated file cost a request");
}
