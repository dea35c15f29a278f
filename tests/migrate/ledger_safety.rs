//! The ledger is the only record of what became of every item: one writer at a time however
//! its path is spelled, bound to an account only once the account answered, read without
//! being touched, refused before any write when damaged, and copied safely.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use cfimg::emulator::Faults;

use crate::common::{TestEnv, png, text};

/// Every entry of a folder with its bytes (the test's "nothing changed" fingerprint).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = match e.file_type().unwrap().is_file() {
            true => std::fs::read(e.path()).unwrap(),
            false => Vec::new(),
        };
        out.insert(name, bytes);
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A migration slow enough (50 ms per request, one at a time) to be running while a second
/// command starts.
async fn slow_env(files: u32) -> TestEnv {
    let faults = Faults {
        p_latency: 1.0,
        latency_ms: 50,
        ..Faults::default()
    };
    let env = TestEnv::with_faults(faults, "concurrency = 1").await;
    for i in 0..files {
        env.write(&format!("{i}.png"), &png(i, 500));
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_through_a_symlink_or_a_hard_link_is_refused_and_nothing_is_uploaded_twice()
{
    for spelling in ["symlink", "hard link", "./relative"] {
        let env = slow_env(20).await;
        let src = env.src.to_str().unwrap().to_string();
        // The ledger exists before the first run, so that a hard link to it can be made.
        let out = env.run(&["migrate", &src, "--dry-run"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        std::fs::write(&env.ledger, b"").unwrap();
        let other: PathBuf = match spelling {
            "symlink" => {
                let p = env.dir.path().join("link.sqlite");
                std::os::unix::fs::symlink(&env.ledger, &p).unwrap();
                p
            }
            "hard link" => {
                let p = env.dir.path().join("hard.sqlite");
                std::fs::hard_link(&env.ledger, &p).unwrap();
                p
            }
            _ => PathBuf::from("./ledger.sqlite"),
        };
        let mut first = env
            .cmd(&["migrate", &src, "--id-mode", "auto"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        env.wait_for(Duration::from_secs(30), |e| e.upload_posts() >= 1)
            .await;
        let out = env
            .run(&[
                "--ledger",
                other.to_str().unwrap(),
                "migrate",
                &src,
                "--id-mode",
                "auto",
            ])
            .await;
        assert_eq!(out.status.code(), Some(75), "{spelling}: {}", text(&out));
        assert!(
            stderr(&out).contains("another cfimg run is using the ledger"),
            "{spelling}: {}",
            text(&out)
        );
        assert_eq!(first.wait().await.unwrap().code(), Some(0), "{spelling}");
        assert_eq!(
            env.inspect().images.len(),
            20,
            "{spelling}: one image per file, no duplicates"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_for_a_mistyped_account_leaves_the_ledger_unbound_and_the_dry_run_sees_a_mismatch()
 {
    let env = TestEnv::new().await;
    env.write_pngs(&["a.png", "b.png"], 300);
    let good = std::fs::read_to_string(&env.config).unwrap();
    let wrong = env.dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        good.replace(env.emu.account_id(), "fedcba98765432100123456789abcdef"),
    )
    .unwrap();
    let with_wrong = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"));
        c.args(["--config", wrong.to_str().unwrap()])
            .args(args)
            .env("CLOUDFLARE_API_TOKEN", crate::common::TOKEN)
            .env_remove("CLOUDFLARE_ACCOUNT_ID")
            .current_dir(env.dir.path());
        c
    };
    let src = env.src.to_str().unwrap().to_string();
    let out = with_wrong(&["migrate", &src]).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        std::fs::read_to_string(&wrong).unwrap(),
        text(&out)
    );

    // The right account is not refused for the mistake.
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 2, "{summary}");

    // Now the ledger is bound: the dry run with the wrong id says so, as the run would.
    let out = with_wrong(&["migrate", &src, "--dry-run"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("this ledger belongs to account"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ledger_is_named_with_exit_2_and_nothing_is_created() {
    let env = TestEnv::new().await;
    let missing = env.dir.path().join("typo.sqlite");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["--ledger", m, "failures"],
        vec!["--ledger", m, "status"],
        vec!["--ledger", m, "status", "--json"],
        vec!["--ledger", m, "export"],
        vec!["--ledger", m, "direct-upload", "status"],
        vec!["--ledger", m, "ledger", "check"],
        vec!["--ledger", m, "ledger", "backup", "copy.sqlite"],
    ] {
        let before = snapshot(env.dir.path());
        let out = env.run(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            stderr(&out).contains(&format!("no ledger at {m}")),
            "{args:?}: {}",
            text(&out)
        );
        assert_eq!(
            snapshot(env.dir.path()),
            before,
            "{args:?} created or changed something"
        );
    }
}

/// A tmpfs mounted over `dir`, unmounted when dropped (needs CAP_SYS_ADMIN).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(dir.to_path_buf()))
    }

    fn read_only(&self) {
        let s = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success(), "remount read-only");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The read-only commands, all expected to succeed.
async fn read_only_commands(env: &TestEnv, ledger: &Path) -> Vec<(String, Output)> {
    let l = ledger.to_str().unwrap();
    let mut outs = Vec::new();
    for args in [
        vec!["--ledger", l, "status"],
        vec!["--ledger", l, "failures", "--all"],
        vec!["--ledger", l, "export", "--format", "jsonl"],
        vec!["--ledger", l, "verify"],
        vec!["--ledger", l, "ledger", "check"],
    ] {
        outs.push((args[2..].join(" "), env.run(&args).await));
    }
    outs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_change_nothing_and_work_on_a_read_only_file_system() {
    let env = TestEnv::new().await;
    env.write_pngs(&["a.png", "b/c.png", "d.png"], 300);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));

    // 1. In a writable folder: the ledger and the folder stay byte for byte and entry for
    // entry what they were (no -wal, no -shm created, nothing rewritten).
    let before = snapshot(env.dir.path());
    assert!(
        !before.contains_key("ledger.sqlite-wal") && !before.contains_key("ledger.sqlite-shm"),
        "a finished run leaves the ledger alone: {:?}",
        before.keys()
    );
    for (what, out) in read_only_commands(&env, &env.ledger).await {
        assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out));
        assert_eq!(
            snapshot(env.dir.path()),
            before,
            "{what} changed the folder"
        );
    }

    // 2. On a read-only mount, where nothing could be created even by root.
    let ro = env.dir.path().join("ro");
    let Some(mount) = Mount::tmpfs(&ro) else {
        eprintln!("SKIPPED the read-only mount half: `mount -t tmpfs` is not allowed here");
        return;
    };
    std::fs::copy(&env.ledger, ro.join("ledger.sqlite")).unwrap();
    mount.read_only();
    let before = snapshot(&ro);
    for (what, out) in read_only_commands(&env, &ro.join("ledger.sqlite")).await {
        assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out));
    }
    assert_eq!(snapshot(&ro), before);
    // A writer cannot use it, and waiting will not change that: exit 2, not 75.
    let src = env.src.to_str().unwrap().to_string();
    let ro_ledger = ro.join("ledger.sqlite");
    let out = env
        .run(&["--ledger", ro_ledger.to_str().unwrap(), "migrate", &src])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // 3. A ledger in WAL mode without its -shm (a copy made while a run was writing): read
    // as immutable where no -shm can be made.
    drop(mount);
    let mount = Mount::tmpfs(&ro).expect("mounted once already");
    let wal_copy = ro.join("ledger.sqlite");
    std::fs::copy(&env.ledger, &wal_copy).unwrap();
    let c = rusqlite::Connection::open(&wal_copy).unwrap();
    c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .unwrap();
    drop(c);
    assert!(!ro.join("ledger.sqlite-shm").exists());
    mount.read_only();
    for (what, out) in read_only_commands(&env, &wal_copy).await {
        assert_eq!(
            out.status.code(),
            Some(0),
            "WAL ledger, {what}: {}",
            text(&out)
        );
    }
}

/// Overwrites the start of the file's last page (a page of rows or of an index, written
/// late in the run; not the header, not the schema), as a flipped page would: only a check
/// that reads every page finds it.
fn damage_a_late_page(ledger: &Path) {
    let c = rusqlite::Connection::open(ledger).unwrap();
    // No free pages: the last page is then one SQLite reads.
    c.execute_batch("VACUUM").unwrap();
    let page_size: usize = c
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize;
    let pages: usize = c
        .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize;
    let free: usize = c
        .query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize;
    assert!(pages > 10 && free == 0, "pages {pages}, free {free}");
    drop(c);
    let mut bytes = std::fs::read(ledger).unwrap();
    let at = (pages - 1) * page_size;
    for b in &mut bytes[at..at + 64] {
        *b = 0xA5;
    }
    std::fs::write(ledger, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_ledger_is_refused_by_migrate_watch_and_status_before_any_write() {
    let env = TestEnv::new().await;
    let keys: Vec<String> = (0..400).map(|i| format!("d{}/{i}.png", i % 7)).collect();
    env.write_pngs(&keys, 200);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    damage_a_late_page(&env.ledger);
    env.write("new.png", &png(9999, 300));
    let before = snapshot(env.dir.path());
    let posts = env.upload_posts();
    let src = env.src.to_str().unwrap().to_string();
    for args in [
        vec!["migrate", src.as_str()],
        vec!["watch", src.as_str()],
        vec!["status"],
        vec!["export"],
        vec!["failures"],
        vec!["verify"],
        vec!["ledger", "backup", "copy.sqlite"],
    ] {
        let out = tokio::time::timeout(Duration::from_secs(60), env.run(&args))
            .await
            .expect("refused at once, not left running");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.contains("is damaged"), "{args:?}: {err}");
        assert!(
            err.contains("cfimg ledger rebuild") && err.contains("cfimg ledger backup"),
            "{args:?} names the way out: {err}"
        );
        assert_eq!(snapshot(env.dir.path()), before, "{args:?} wrote something");
    }
    assert_eq!(env.upload_posts(), posts, "nothing was uploaded");
    let out = env.run(&["ledger", "check"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        !out.stdout.is_empty(),
        "the problems are listed: {}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_short_or_foreign_ledger_file_is_refused_as_damaged() {
    let env = TestEnv::new().await;
    env.write_pngs(&["a.png"], 300);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let bytes = std::fs::read(&env.ledger).unwrap();
    for (what, damaged) in [
        ("cut short", bytes[..bytes.len() / 2].to_vec()),
        ("not SQLite", b"this is not a database at all, but long enough to hold a SQLite header if it were one; padding padding".to_vec()),
    ] {
        std::fs::write(&env.ledger, &damaged).unwrap();
        let out = env.run(&["status"]).await;
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        assert!(stderr(&out).contains("is damaged"), "{what}: {}", text(&out));
        let (code, _, out) = env.migrate(&[]).await;
        assert_eq!(code, 2, "{what}: {}", text(&out));
        assert_eq!(std::fs::read(&env.ledger).unwrap(), damaged, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ledger_is_created_at_the_current_schema_and_an_old_one_still_migrates() {
    let env = TestEnv::new().await;
    env.write_pngs(&["a.png"], 300);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert!(
        !stderr(&out).contains("migrated"),
        "a new ledger is not migrated: {}",
        text(&out)
    );
    let c = rusqlite::Connection::open(&env.ledger).unwrap();
    let v: i32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, cfimg::ledger::SCHEMA_VERSION);
    drop(c);

    let old = env.dir.path().join("old.sqlite");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ledger-v1.sqlite"),
        &old,
    )
    .unwrap();
    // A read-only command does not upgrade it, and says which does.
    let out = env
        .run(&["--ledger", old.to_str().unwrap(), "status"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("older cfimg"), "{}", text(&out));
    let src = env.src.to_str().unwrap().to_string();
    let out = env
        .run(&[
            "--ledger",
            old.to_str().unwrap(),
            "migrate",
            &src,
            "--dry-run",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env
        .run(&["--ledger", old.to_str().unwrap(), "migrate", &src])
        .await;
    assert!(
        stderr(&out).contains("ledger schema migrated"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_backup_copies_a_ledger_in_use_and_never_overwrites_unasked() {
    let env = slow_env(30).await;
    let src = env.src.to_str().unwrap().to_string();
    let mut first = env
        .cmd(&["migrate", &src])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for(Duration::from_secs(30), |e| e.upload_posts() >= 3)
        .await;
    let copy = env.dir.path().join("copy.sqlite");
    let out = env.run(&["ledger", "backup", copy.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The copy is whole, stands alone, and is a ledger the commands read.
    let c = rusqlite::Connection::open(&copy).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(c);
    let out = env
        .run(&["--ledger", copy.to_str().unwrap(), "status"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = env.run(&["ledger", "backup", copy.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("--force"), "{}", text(&out));
    assert_eq!(first.wait().await.unwrap().code(), Some(0));
    let out = env
        .run(&["ledger", "backup", copy.to_str().unwrap(), "--force"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let c = rusqlite::Connection::open(&copy).unwrap();
    let uploaded: i64 = c
        .query_row(
            "SELECT count(*) FROM items WHERE state = 'uploaded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(uploaded, 30);
}
