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
        for (key, default) in [("rate", "2000"), ("concurrency", "8")] {
            if !upload_toml.contains(key) {
                upload.push_str(&format!("\n{key} = {default}"));
            }
        }
        std::fs::write(
            &config,
            format!(
                "account_id = \"{}\"\napi_base_url = \"{}\"\nledger = \"{}\"\n[upload]\n{upload}\n",
                emu.account_id(),
                emu.api_base(),
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
        let p = self.src.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes).expect("write");
        p
    }

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
    let source = cfimg::source::SourceId::new(
        cfimg::source::SourceKind::Dir,
        canonical.to_str().expect("utf-8 path"),
    );
    cfimg::stamp::source_hash(&source, key)
}

/// Hex sha256 of a file.
pub fn sha256_file(p: &Path) -> String {
    let bytes = std::fs::read(p).expect("read");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A small PNG-signed payload unique to `n` (the emulator sniffs magic bytes only).
pub fn png(n: u32, len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut x = n.wrapping_mul(2_654_435_761).wrapping_add(1);
    while v.len() < len.max(16) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}

/// A small JPEG-signed payload unique to `n`.
pub fn jpeg(n: u32, len: usize) -> Vec<u8> {
    let mut v = png(n, len);
    v[..4].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
    v
}

/// Text of a process's output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
