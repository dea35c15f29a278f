//! `direct-upload status` on a ledger that cannot be written (issue 17.2: read-only
//! commands work on a read-only file system) shows the drafts as recorded.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{TestEnv, text};

/// A tmpfs mounted over `dir`, unmounted when dropped (needs CAP_SYS_ADMIN).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_upload_status_shows_the_drafts_of_a_ledger_on_a_read_only_file_system() {
    let env = TestEnv::new().await;
    let out = env.run(&["direct-upload", "create", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let minted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = minted["id"].as_str().unwrap().to_string();

    let ro = env.dir.path().join("ro");
    let Some(mount) = Mount::tmpfs(&ro) else {
        eprintln!("SKIPPED: `mount -t tmpfs` is not allowed here");
        return;
    };
    let ledger = ro.join("ledger.sqlite");
    std::fs::copy(&env.ledger, &ledger).unwrap();
    let s = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mount.0)
        .status()
        .unwrap();
    assert!(s.success(), "remount read-only");

    let l = ledger.to_str().unwrap();
    let out = env
        .run(&["--ledger", l, "direct-upload", "status", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let drafts: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drafts[0]["id"], id.as_str(), "{drafts}");
    assert_eq!(drafts[0]["state"], "pending", "{drafts}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be written"),
        "{}",
        text(&out)
    );
}
