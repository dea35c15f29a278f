//! Shared test helpers: a `TestEnv` with an in-process emulator on 127.0.0.1:0, a source
//! folder, a ledger, and a way to run the real `cfimg` binary against them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use cfimg::emulator::{self, EmulatorConfig, EmulatorHandle, Faults, Inspection};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub mod formats;
pub mod origin;

/// The emulator's token in tests; asserted never to leak.
pub const TOKEN: &str = "test-token-9f8e7d6c5b4a";

/// A folder to migrate, a ledger, an emulator and a config file for the binary.
pub struct TestEnv {
    /// Holds everything on disk.
    pub dir: tempfile::TempDir,
    /// The folder to migrate.
    pub src: PathBuf,
    /// The ledger path.
    pub ledger: PathBuf,
    /// The config file the binary is given.
    pub config: PathBuf,
    /// The emulator.
    pub emu: EmulatorHandle,
}

impl TestEnv {
    /// An emulator with its rate limits off.
    pub async fn new() -> TestEnv {
        TestEnv::with(
            EmulatorConfig {
                api_rate_limit: None,
                batch_rate_limit: None,
                ..EmulatorConfig::default()
            },
            "",
        )
        .await
    }

    /// An emulator with this configuration, and extra `[upload]` lines for the client.
    pub async fn with(cfg: EmulatorConfig, upload_toml: &str) -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("src dir");
        let emu = emulator::start(
            "127.0.0.1:0".parse().expect("addr"),
            EmulatorConfig {
                api_token: TOKEN.into(),
                ..cfg
            },
        )
        .await
        .expect("emulator starts");
        let ledger = dir.path().join("ledger.sqlite");
        let config = dir.path().join("cfimg.toml");
        // Defaults fast enough for tests, unless the test sets them.
        let mut upload = upload_toml.to_string();
        for (key, default) in [
            ("rate", "2000"),
            ("concurrency", "8"),
            ("list_lag_secs", "0.5"),
        ] {
            // A test may set the list lag under its old name, `settle_secs`.
            let set = upload_toml.contains(key)
                || (key == "list_lag_secs" && upload_toml.contains("settle_secs"));
            if !set {
                upload.push_str(&format!("\n{key} = {default}"));
            }
        }
        std::fs::write(
            &config,
            format!(
                "account_id = \"{}\"\napi_base_url = \"{}\"\nbatch_base_url = \"{}\"\nledger = \"{}\"\n[upload]\n{upload}\n",
                emu.account_id(),
                emu.api_base(),
                emu.batch_base(),
                ledger.display()
            ),
        )
        .expect("config");
        TestEnv {
            dir,
            src,
            ledger,
            config,
            emu,
        }
    }

    /// An emulator with rate limits off and these faults.
    pub async fn with_faults(faults: Faults, upload_toml: &str) -> TestEnv {
        TestEnv::with(
            EmulatorConfig {
                api_rate_limit: None,
                faults,
                ..EmulatorConfig::default()
            },
            upload_toml,
        )
        .await
    }

    /// Writes distinct PNG-signed files of `len` bytes at these keys; returns the keys.
    pub fn write_pngs<S: AsRef<str>>(&self, keys: &[S], len: usize) -> Vec<String> {
        for (i, k) in keys.iter().enumerate() {
            self.write(k.as_ref(), &png(i as u32, len));
        }
        keys.iter().map(|k| k.as_ref().to_string()).collect()
    }

    /// Writes a file under the source folder.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        write_in(&self.src, rel, bytes)
    }

    /// Runs `cfimg migrate <folder> --json <extra>` for any folder.
    pub async fn migrate_dir(&self, folder: &Path, extra: &[&str]) -> (i32, Value, Output) {
        let dir = folder.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["migrate", dir.as_str(), "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args).await;
        let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), summary, out)
    }

    /// Every ledger row, whatever its source.
    pub fn all_rows(&self) -> Vec<cfimg::ledger::Row> {
        cfimg::ledger::Ledger::open_read_only(&self.ledger)
            .expect("ledger opens")
            .expect("ledger exists")
            .all_rows()
            .expect("rows")
    }
}

/// Writes a file under a folder, creating its parents.
pub fn write_in(folder: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    {
        let p = folder.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes).expect("write");
        p
    }
}

impl TestEnv {
    /// A `cfimg` command with this env's config and token.
    pub fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"));
        c.args(["--config", self.config.to_str().expect("utf-8 path")])
            .args(args)
            .env("CLOUDFLARE_API_TOKEN", TOKEN)
            .env_remove("CLOUDFLARE_ACCOUNT_ID")
            .env_remove("CFIMG_API_BASE_URL")
            .env_remove("CFIMG_LEDGER")
            .env("RUST_LOG", "cfimg=debug")
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        c
    }

    /// Runs `cfimg` to the end.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().await.expect("cfimg runs")
    }

    /// Runs `cfimg migrate <src> --json <extra>` and returns (exit code, summary).
    pub async fn migrate(&self, extra: &[&str]) -> (i32, Value, Output) {
        let src = self.src.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["migrate", src.as_str(), "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args).await;
        let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), summary, out)
    }

    /// The emulator's view.
    pub fn inspect(&self) -> Inspection {
        self.emu.inspect()
    }

    /// Requests the emulator served for a route (any status).
    pub fn requests(&self, route: &str) -> u64 {
        self.inspect()
            .requests
            .iter()
            .filter(|r| r.route == route)
            .map(|r| r.count)
            .sum()
    }

    /// Requests of a method to an API-host path (after `/images/`), any status.
    pub fn api_requests(&self, method: &str, path: &str) -> u64 {
        self.requests(&format!(
            "{method} /client/v4/accounts/{{account_id}}/images/{path}"
        ))
    }

    /// Upload POSTs the emulator received, whatever their answer.
    pub fn upload_posts(&self) -> u64 {
        self.api_requests("POST", "v1")
    }

    /// Requests answered with this status (0: connection dropped by a fault).
    pub fn requests_with_status(&self, status: u16) -> u64 {
        self.inspect()
            .requests
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.count)
            .sum()
    }

    /// Every request the emulator received.
    pub fn total_requests(&self) -> u64 {
        self.inspect().requests.iter().map(|r| r.count).sum()
    }

    /// Number of stored images per stamped source hash.
    pub fn images_per_source(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for img in self.inspect().images {
            let src = img
                .meta
                .get("cfimg_src")
                .and_then(Value::as_str)
                .unwrap_or("<unstamped>")
                .to_string();
            *m.entry(src).or_insert(0) += 1;
        }
        m
    }

    /// The stamp hash of an item of the source folder.
    pub fn stamp_of(&self, key: &str) -> String {
        stamp_in(&self.src, key)
    }

    /// Rows of the ledger, by key (for ledgers of one source).
    pub fn ledger_rows(&self) -> BTreeMap<String, cfimg::ledger::Row> {
        let l = cfimg::ledger::Ledger::open_read_only(&self.ledger)
            .expect("ledger opens")
            .expect("ledger exists");
        l.all_rows()
            .expect("rows")
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect()
    }

    /// Asserts that every file under `src` is uploaded exactly once, with the same bytes.
    pub async fn assert_exactly_once<S: AsRef<str>>(&self, keys: &[S]) {
        let per_source = self.images_per_source();
        let rows = self.ledger_rows();
        let images = self.inspect().images;
        for key in keys.iter().map(AsRef::as_ref) {
            let hash = self.stamp_of(key);
            assert_eq!(
                per_source.get(&hash),
                Some(&1),
                "{key}: images for this source: {per_source:?}"
            );
            let row = rows
                .get(key)
                .unwrap_or_else(|| panic!("{key} missing from the ledger"));
            assert_eq!(row.state, cfimg::ledger::State::Uploaded, "{key}: {row:?}");
            let id = row.image_id.as_deref().expect("image id");
            let img = images
                .iter()
                .find(|i| i.id == id)
                .unwrap_or_else(|| panic!("{key}: image {id} not stored"));
            let want = sha256_file(&self.src.join(key));
            assert_eq!(img.sha256, want, "{key}: stored bytes differ");
        }
        assert_eq!(
            images.len(),
            keys.len(),
            "stored images: {:?}",
            images.iter().map(|i| &i.id).collect::<Vec<_>>()
        );
    }

    /// Waits until `cond` holds on the emulator's state, or panics after `limit`.
    pub async fn wait_for(&self, limit: Duration, mut cond: impl FnMut(&TestEnv) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The stamp hash of an item of a folder source.
pub fn stamp_in(folder: &Path, key: &str) -> String {
    let canonical = std::fs::canonicalize(folder).expect("canonical folder");
    let source = cfimg::item::SourceId::new(
        cfimg::item::SourceKind::Dir,
        canonical.to_str().expect("utf-8 path"),
    );
    cfimg::stamp::source_hash(&source, key)
}

/// Hex sha256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex sha256 of a file.
pub fn sha256_file(p: &Path) -> String {
    let bytes = std::fs::read(p).expect("read");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Padding bytes unique to `n`: its bytes, then an xorshift stream seeded from it.
fn padding(n: u32, len: usize) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    let mut x = n.wrapping_mul(2_654_435_761).wrapping_add(1);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v.truncate(len.max(4));
    v
}

/// A valid PNG of `width` x `height` (grey, 1 bit per pixel, so wide ones stay small), with
/// a private ancillary `cfPd` chunk of `pad` bytes (`None`: no such chunk).
fn png_image(n: u32, width: u32, height: u32, pad: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    let mut w = enc.write_header().expect("png header");
    if let Some(pad) = pad {
        w.write_chunk(png::chunk::ChunkType(*b"cfPd"), &padding(n, pad))
            .expect("png chunk");
    }
    let row = (width as usize).div_ceil(8);
    let rows: Vec<u8> = (0..row * height as usize)
        .map(|i| (n as usize).wrapping_add(i) as u8)
        .collect();
    w.write_image_data(&rows).expect("png data");
    w.finish().expect("png end");
    out
}

/// A valid 1x1 PNG unique to `n`, padded to exactly `len` bytes when `len` allows (at least
/// about 80): a private ancillary chunk (correct CRC) holds the padding, which decoders skip.
pub fn png(n: u32, len: usize) -> Vec<u8> {
    let bare = png_image(n, 1, 1, None).len();
    // The padding chunk costs 12 bytes of header and CRC, and holds at least `n`.
    let pad = len.saturating_sub(bare + 12).max(4);
    png_image(n, 1, 1, Some(pad))
}

/// A PNG unique to `n` cut short inside its image data: the service answers 9422.
pub fn truncated_png(n: u32) -> Vec<u8> {
    let mut v = png(n, 200);
    v.truncate(v.len() - 16);
    v
}

/// A PNG unique to `n` with one byte of its image data flipped (its CRC no longer
/// matches): the service answers 9422.
pub fn corrupt_png(n: u32) -> Vec<u8> {
    let mut v = png(n, 200);
    let at = v
        .windows(4)
        .position(|w| w == b"IDAT")
        .expect("an IDAT chunk");
    v[at + 6] ^= 0xFF;
    v
}

/// A valid PNG `width` px wide and 1 px high, a few hundred bytes at most: over 12,000 px
/// the service answers 5400.
pub fn wide_png(width: u32) -> Vec<u8> {
    png_image(width, width, 1, None)
}

/// A valid 8x8 grey baseline JPEG unique to `n`, padded to exactly `len` bytes when `len`
/// allows (at least about 200) with COM segments right after SOI.
pub fn jpeg(n: u32, len: usize) -> Vec<u8> {
    // DQT, SOF0 (8x8, one component), a DC and an AC table of one code each, SOS, one
    // block's entropy data (DC difference 0, end of block), EOI.
    let mut body = vec![0xFF, 0xDB, 0, 67, 0];
    body.extend_from_slice(&[1u8; 64]);
    body.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
    for class in [0x00u8, 0x10] {
        body.extend_from_slice(&[0xFF, 0xC4, 0, 20, class, 1]);
        body.extend_from_slice(&[0u8; 16]);
    }
    body.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0x00, 0, 63, 0, 0x3F, 0xFF, 0xD9]);
    // Each COM segment is 4 bytes of marker and length plus at most 65533 of payload.
    let mut comments = len.saturating_sub(2 + body.len()).max(8);
    let pad = padding(n, comments);
    let mut v = vec![0xFF, 0xD8];
    let mut used = 0;
    while comments > 0 {
        let seg = if comments > 65_537 {
            65_537.min(comments - 8)
        } else {
            comments
        };
        v.extend_from_slice(&[0xFF, 0xFE]);
        v.extend_from_slice(&((seg - 2) as u16).to_be_bytes());
        v.extend_from_slice(&pad[used..used + seg - 4]);
        used += seg - 4;
        comments -= seg;
    }
    v.extend(body);
    v
}

/// A valid 2-frame 4x4 GIF unique to `n`.
pub fn gif(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let [a, b, c, d] = n.to_be_bytes();
        let palette = [a, b, c, d, 0, 0, 255, 255, 255, 0, 0, 0];
        let mut enc = gif::Encoder::new(&mut out, 4, 4, &palette).expect("gif header");
        for f in 0..2u8 {
            let pixels: Vec<u8> = (0..16u8).map(|i| (i + f) % 4).collect();
            let frame = gif::Frame {
                width: 4,
                height: 4,
                buffer: pixels.into(),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).expect("gif frame");
        }
    }
    out
}

/// A valid lossy WebP (the example image).
pub fn webp() -> Vec<u8> {
    include_bytes!("../../examples/images/photos/2024/büro.webp").to_vec()
}

/// Text of a process's output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
