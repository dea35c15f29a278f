//! `cfimg verify --deep` (issue 21, item 3): the stored originals against their sources.
//! The emulator re-encodes originals over a size (as the service's "near-lossless version"
//! of larger images) and serves another picture for an image it is told to alter.

use serde_json::Value;

use crate::common::formats::{SVG_HEAD, SVG_TAIL, svg};
use crate::common::{TestEnv, text};
use cfimg::emulator::{EmulatorConfig, OriginalsArgs};

/// Originals over this many bytes come back re-encoded as JPEG.
const REENCODE_ABOVE: u64 = 8_000;

async fn env() -> TestEnv {
    TestEnv::with(
        EmulatorConfig {
            api_rate_limit: None,
            batch_rate_limit: None,
            originals: OriginalsArgs {
                reencode_originals_above: Some(REENCODE_ABOVE),
                ..OriginalsArgs::default()
            },
            ..EmulatorConfig::default()
        },
        "",
    )
    .await
}

/// A PNG picture unique to `seed`, `w` x `h`; `grain` adds noise that keeps it from
/// compressing (so it is large).
fn picture(seed: u32, w: u32, h: u32, grain: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    let img = image::RgbImage::from_fn(w, h, |px, py| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let noise = if grain { (x % 16) as i32 - 8 } else { 0 };
        let (cx, cy) = (w as i32 / 2, h as i32 / 2);
        let inside = (px as i32 - cx).pow(2) + (py as i32 - cy).pow(2) < (w as i32 / 3).pow(2);
        let v = ((px * 255 / w) as i32 + noise).clamp(0, 255) as u8;
        if inside ^ (seed % 2 == 1) {
            image::Rgb([v, 40, 200])
        } else {
            image::Rgb([30, 255 - v, (py * 255 / h) as u8])
        }
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png encodes");
    out
}

fn image_id(env: &TestEnv, key: &str) -> String {
    env.ledger_rows()[key]
        .image_id
        .clone()
        .unwrap_or_else(|| panic!("{key} has an image"))
}

async fn migrate(env: &TestEnv) {
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{summary} {}", text(&out));
}

/// `verify --deep --json`: the listed objects, and the summary's counts.
async fn deep_json(env: &TestEnv, extra: &[&str]) -> (i32, Vec<Value>, Value, String) {
    let mut args = vec!["verify", "--deep", "--json"];
    args.extend_from_slice(extra);
    let out = env.run(&args).await;
    let said = text(&out);
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{said}")))
        .collect();
    let summary = lines.pop().unwrap_or(Value::Null)["summary"].clone();
    (out.status.code().unwrap_or(-1), lines, summary, said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_bytes_are_ok_a_reencoded_original_is_recompressed_and_a_gone_source_is_no_finding() {
    let env = env().await;
    let small = picture(0, 32, 24, false);
    let large = picture(2, 160, 120, true);
    assert!((small.len() as u64) < REENCODE_ABOVE && (large.len() as u64) > REENCODE_ABOVE);
    env.write("small.png", &small);
    env.write("large.png", &large);
    env.write("gone.png", &picture(4, 32, 24, false));
    migrate(&env).await;
    std::fs::remove_file(env.src.join("gone.png")).unwrap();

    let out = env.run(&["verify", "--deep"]).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let gone_id = image_id(&env, "gone.png");
    assert!(
        said.lines().any(|l| l.starts_with("source gone\t")
            && l.contains("\tgone.png\t")
            && l.contains(&gone_id)),
        "{said}"
    );
    assert!(
        said.contains("3 of 3 mapped images checked")
            && said.contains("1 ok, 1 recompressed")
            && said.contains("0 different, 0 missing, 1 source gone"),
        "{said}"
    );
    assert!(
        said.contains("clean: the account holds the pictures"),
        "{said}"
    );
    // ok and recompressed are counted, not listed.
    assert!(
        !said.contains("small.png") && !said.contains("large.png"),
        "{said}"
    );
    // One blob download per image whose source is still there.
    assert_eq!(env.api_requests("GET", "v1/{image_id}/blob"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stored_picture_is_a_finding_listed_with_its_source_and_image() {
    let env = env().await;
    env.write("same.png", &picture(0, 48, 32, false));
    env.write("altered.png", &picture(2, 48, 32, false));
    env.write("resized.png", &picture(4, 48, 32, false));
    env.write("logo.svg", &svg(3));
    env.write("icon.svg", &svg(4));
    migrate(&env).await;
    let altered = image_id(&env, "altered.png");
    let resized = image_id(&env, "resized.png");
    let icon = image_id(&env, "icon.svg");
    // Another picture of the same size; the same picture at another size; an SVG of the
    // same size with other content (Cloudflare rewrites SVGs); one of another size.
    env.emu.alter_original(&altered, picture(3, 48, 32, false));
    env.emu.alter_original(&resized, picture(4, 24, 16, false));
    let mut redrawn = svg(9);
    redrawn.extend_from_slice(b"<!-- sanitized -->\n");
    env.emu.alter_original(&image_id(&env, "logo.svg"), redrawn);
    let wider = format!(
        "{}{}",
        SVG_HEAD.replace("width=\"40\"", "width=\"80\""),
        SVG_TAIL
    );
    env.emu.alter_original(&icon, wider.into_bytes());

    let out = env.run(&["verify", "--deep"]).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let line = |key: &str| {
        said.lines()
            .find(|l| l.contains(&format!("\t{key}\t")))
            .unwrap_or_else(|| panic!("no line for {key}: {said}"))
            .to_string()
    };
    let a = line("altered.png");
    assert!(
        a.starts_with("different\tdir:") && a.contains(&altered),
        "{a}"
    );
    assert!(a.contains("another picture: perceptual hashes"), "{a}");
    let r = line("resized.png");
    assert!(
        r.starts_with("different\t") && r.contains("48x32 at the source, 24x16 stored"),
        "{r}"
    );
    let l = line("logo.svg");
    assert!(
        l.starts_with("same dimensions\t") && l.contains("SVG is not decoded"),
        "{l}"
    );
    let i = line("icon.svg");
    assert!(
        i.starts_with("different\t") && i.contains("40x40 at the source, 80x40 stored"),
        "{i}"
    );
    assert!(!said.contains("\tsame.png\t"), "{said}");
    assert!(
        said.contains("1 ok, 0 recompressed, 1 same dimensions (format not decoded), 3 different"),
        "{said}"
    );

    // --json: one object per listed image, then the summary.
    let (code, listed, summary, said) = deep_json(&env, &[]).await;
    assert_eq!(code, 1, "{said}");
    assert_eq!(summary["clean"], false, "{said}");
    assert_eq!(summary["counts"]["mapped"], 5, "{said}");
    assert_eq!(summary["counts"]["checked"], 5, "{said}");
    assert_eq!(summary["counts"]["ok"], 1, "{said}");
    assert_eq!(summary["counts"]["different"], 3, "{said}");
    assert_eq!(summary["counts"]["same_dimensions"], 1, "{said}");
    assert_eq!(listed.len(), 4, "{said}");
    let found = listed
        .iter()
        .find(|v| v["key"] == "altered.png")
        .unwrap_or_else(|| panic!("{said}"));
    assert_eq!(found["verdict"], "different");
    assert_eq!(found["image_id"], altered.as_str());
    assert!(found["source"].as_str().unwrap().starts_with("dir:"));
    assert!(found["reason"].as_str().unwrap().contains("perceptual"));
    let svg = listed.iter().find(|v| v["key"] == "logo.svg").unwrap();
    assert_eq!(svg["verdict"], "same_dimensions");
    assert_eq!(svg["format"], "SVG");

    // A sample: N images, or a share of them (rounded up), each chosen once.
    let before = env.api_requests("GET", "v1/{image_id}/blob");
    let (_, _, summary, said) = deep_json(&env, &["--sample", "2"]).await;
    assert_eq!(summary["counts"]["mapped"], 5, "{said}");
    assert_eq!(summary["counts"]["checked"], 2, "{said}");
    assert_eq!(env.api_requests("GET", "v1/{image_id}/blob"), before + 2);
    let (_, _, summary, said) = deep_json(&env, &["--sample", "50%"]).await;
    assert_eq!(summary["counts"]["checked"], 3, "{said}");
    let out = env.run(&["verify", "--deep", "--sample", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = env.run(&["verify", "--sample", "3"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "--sample needs --deep: {}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_urls_are_downloaded_again_and_a_url_that_answers_404_is_a_gone_source() {
    let env = env().await;
    let origin = crate::common::origin::Origin::start().await;
    origin.put("a.png", picture(0, 32, 24, false));
    origin.put("b.png", picture(2, 32, 24, false));
    let list = env.dir.path().join("urls.txt");
    std::fs::write(
        &list,
        format!("{}\n{}\n", origin.img("a.png"), origin.img("b.png")),
    )
    .unwrap();
    let out = env
        .run(&["migrate", "--manifest", list.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    origin.remove("b.png");
    // The manifest file itself is not needed: its rows are in the ledger.
    std::fs::remove_file(&list).unwrap();
    let hits = origin.hits("/img/a.png");

    let (code, listed, summary, said) = deep_json(&env, &[]).await;
    assert_eq!(code, 0, "{said}");
    assert_eq!(summary["counts"]["ok"], 1, "{said}");
    assert_eq!(summary["counts"]["source_gone"], 1, "{said}");
    assert_eq!(listed.len(), 1, "{said}");
    assert_eq!(listed[0]["verdict"], "source_gone");
    assert_eq!(listed[0]["key"], origin.img("b.png"));
    assert!(
        listed[0]["reason"].as_str().unwrap().contains("404"),
        "{said}"
    );
    assert_eq!(
        origin.hits("/img/a.png"),
        hits + 1,
        "read again from its origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_deleted_behind_the_ledger_is_missing_and_a_finding() {
    let env = env().await;
    env.write("kept.png", &picture(0, 32, 24, false));
    env.write("deleted.png", &picture(2, 32, 24, false));
    migrate(&env).await;
    let id = image_id(&env, "deleted.png");
    let url = format!(
        "{}/accounts/{}/images/v1/{id}",
        env.emu.api_base(),
        env.emu.account_id()
    );
    let resp = reqwest::Client::new()
        .delete(url)
        .bearer_auth(crate::common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let out = env.run(&["verify", "--deep"]).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.lines().any(|l| l.starts_with("missing\t")
            && l.contains("\tdeleted.png\t")
            && l.contains(&id)
            && l.contains("verify --repair")),
        "{said}"
    );
    assert!(
        said.contains("1 ok,") && said.contains("1 missing"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_the_checks_in_flight_deletes_their_files_and_prints_what_was_found() {
    let env = env().await;
    for i in 0..6 {
        env.write(&format!("{i}.png"), &picture(i, 32, 24, false));
    }
    migrate(&env).await;
    // Every answer now takes 30 s: the checks hang on their blobs.
    env.emu.set_faults(cfimg::emulator::Faults {
        p_latency: 1.0,
        latency_ms: 30_000,
        ..cfimg::emulator::Faults::default()
    });
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let spooled = |tmp: &std::path::Path| {
        std::fs::read_dir(tmp)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("cfimg-"))
            .count()
    };
    let child = env
        .cmd(&["verify", "--deep"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while spooled(&tmp) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no blob download started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = child.id().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("cfimg verify --deep ends soon after SIGINT")
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert!(said.contains("0 checked before the interruption"), "{said}");
    assert!(
        said.contains("interrupted: the images not checked yet"),
        "{said}"
    );
    assert_eq!(spooled(&tmp), 0, "the downloads in flight are deleted");
}
