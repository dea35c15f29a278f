//! Messages tell the truth (issue 17.6, 17.7, 17.9): what a run says about an item, a
//! refusal, a ledger or a count is what happened, and every hint is one the user can follow.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::common::origin::{Origin, closed_port_url};
use crate::common::{TestEnv, corrupt_png, png, text};

/// `cfimg failures --all --json`.
async fn failures(env: &TestEnv) -> Vec<Value> {
    let out = env.run(&["failures", "--all", "--json"]).await;
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", text(&out)))
        .as_array()
        .unwrap()
        .clone()
}

fn field<'a>(failures: &'a [Value], key: &str, name: &str) -> &'a str {
    failures
        .iter()
        .find(|f| f["key"] == key)
        .and_then(|f| f[name].as_str())
        .unwrap_or_else(|| panic!("{key} not in {failures:#?}"))
}

/// The env's config file with one line changed.
fn reconfigure(env: &TestEnv, from: &str, to: &str) {
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    assert!(cfg.contains(from), "{cfg}");
    std::fs::write(&env.config, cfg.replace(from, to)).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A manifest beside the ledger.
fn manifest(env: &TestEnv, name: &str, content: &str) -> std::path::PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_check_is_not_worded_as_cloudflares_answer() {
    let env = TestEnv::new().await;
    env.write("good.png", &png(1, 800));
    env.write("corrupt.png", &corrupt_png(2));
    env.write("empty.png", b"");
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(env.upload_posts(), 1, "only the good file cost a request");
    let f = failures(&env).await;
    for key in ["corrupt.png", "empty.png"] {
        let reason = field(&f, key, "reason");
        assert!(reason.starts_with("checked locally: "), "{key}: {reason}");
        assert!(!reason.contains("Cloudflare could not"), "{key}: {reason}");
    }
    assert!(
        field(&f, "corrupt.png", "reason").contains("would refuse it (code 9422)"),
        "{f:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_the_account_id_causes_names_the_account_id() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 800));
    let wrong = "0000000000000000000000000000beef";
    reconfigure(
        &env,
        &format!("account_id = \"{}\"", env.emu.account_id()),
        &format!("account_id = \"{wrong}\""),
    );
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 3, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains(wrong), "{err}");
    assert!(err.contains("CLOUDFLARE_ACCOUNT_ID"), "{err}");
    assert_eq!(env.upload_posts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_row_whose_id_collides_with_a_sibling_names_it_and_the_id_column() {
    let env = TestEnv::new().await;
    let origin = Origin::start().await;
    origin.put("a.png", png(7, 900));
    let small = format!("{}?w=100", origin.img("a.png"));
    let large = format!("{}?w=200", origin.img("a.png"));
    let file = manifest(&env, "urls.txt", &format!("{small}\n{large}\n"));
    let out = env
        .run(&["migrate", "--manifest", file.to_str().unwrap(), "--json"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let f = failures(&env).await;
    assert_eq!(f.len(), 1, "{f:#?}");
    let key = f[0]["key"].as_str().unwrap();
    let sibling = if key == small { &large } else { &small };
    let reason = f[0]["reason"].as_str().unwrap();
    assert!(reason.contains(sibling.as_str()), "{reason}");
    assert!(reason.contains("`id` column"), "{reason}");
    assert!(!reason.contains("delete"), "{reason}");
    // Hash ids need the bytes, which the remote URL mode never holds: not offered.
    assert!(!reason.contains("--id-mode hash"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_point_at_ledgers_that_exist() {
    let env = TestEnv::new().await;
    env.write("good.png", &png(1, 800));
    env.write("empty.png", b"");
    // A dry run writes no ledger, so it sends nobody to one.
    let src = env.src.to_str().unwrap();
    let out = env.run(&["migrate", src, "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!env.ledger.exists());
    assert!(!stdout(&out).contains("cfimg failures"), "{}", text(&out));
    assert!(stdout(&out).contains("recorded nothing"), "{}", text(&out));

    // The README's quick start: `migrate --emulator` with no config keeps its own ledger;
    // it says how to look at it, and `status` finds it when pointed at the default.
    let plain = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"));
        c.args(args)
            .env_remove("CFIMG_CONFIG")
            .env_remove("CFIMG_LEDGER")
            .env_remove("CLOUDFLARE_API_TOKEN")
            .env_remove("CLOUDFLARE_ACCOUNT_ID")
            .env("RUST_LOG", "cfimg=warn")
            .current_dir(env.dir.path())
            .kill_on_drop(true);
        c
    };
    let out = plain(&["migrate", src, "--emulator"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("cfimg status --ledger cfimg-emulator.sqlite"),
        "{}",
        text(&out)
    );
    assert!(env.dir.path().join("cfimg-emulator.sqlite").exists());
    // Whichever stream the missing ledger is reported on, the hint comes with it.
    for command in ["status", "failures"] {
        let out = plain(&[command]).output().await.unwrap();
        assert!(
            text(&out).contains("--ledger cfimg-emulator.sqlite"),
            "{command}: {}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_dry_run_sends_nobody_to_the_ledger_it_did_not_write() {
    let env = TestEnv::new().await;
    env.write("good.png", &png(1, 800));
    let src = env.src.to_str().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args(["migrate", src, "--emulator", "--dry-run"])
        .env_remove("CFIMG_CONFIG")
        .env_remove("CFIMG_LEDGER")
        .env("RUST_LOG", "cfimg=warn")
        .current_dir(env.dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!env.dir.path().join("cfimg-emulator.sqlite").exists());
    assert!(
        stdout(&out).contains("dry run: 1 to upload"),
        "{}",
        text(&out)
    );
    assert!(!stdout(&out).contains("--ledger"), "{}", text(&out));
}

/// Marks the last run as never finished, as a killed run leaves it.
fn unfinish_last_run(ledger: &Path) {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    conn.execute(
        "UPDATE runs SET finished_at = NULL WHERE id = (SELECT max(id) FROM runs)",
        [],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_does_not_call_a_live_run_killed() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 800));
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    unfinish_last_run(&env.ledger);
    {
        // A writer holds the ledger: the run is alive.
        let _held = cfimg::ledger::Maintenance::open(&env.ledger).unwrap();
        let out = env.run(&["status"]).await;
        let said = stdout(&out);
        assert!(!said.contains("killed"), "{said}");
        assert!(said.contains("still running"), "{said}");
    }
    let said = stdout(&env.run(&["status"]).await);
    assert!(said.contains("killed"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_within_one_hash_run_are_counted_as_deduplicated() {
    let env = TestEnv::new().await;
    for i in 0..6 {
        env.write(&format!("copy{i}.png"), &png(3, 1200));
    }
    let (code, summary, out) = env.migrate(&["--id-mode", "hash"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(env.inspect().images.len(), 1);
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_eq!(summary["deduplicated"], 5, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_take_their_singular_and_the_rebuild_promises_no_upload_of_a_rejected_item() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 800));
    env.write("empty.png", b"");
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "{}", text(&out));
    // A rerun spends only the start-up check: one request, said so.
    let out = env.run(&["migrate", env.src.to_str().unwrap()]).await;
    assert!(stdout(&out).contains("; 1 request, "), "{}", text(&out));
    let out = env.run(&["status"]).await;
    assert!(stdout(&out).contains(", 1 request, "), "{}", text(&out));
    assert!(!stdout(&out).contains(" 1 requests"), "{}", text(&out));

    std::fs::remove_file(&env.ledger).unwrap();
    let src = env.src.to_str().unwrap();
    let out = env.run(&["ledger", "rebuild", "--source", src]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = stdout(&out);
    assert!(
        !said.contains("the next `cfimg migrate` uploads them"),
        "{said}"
    );
    assert!(said.contains("1 item has no image"), "{said}");
    assert!(said.contains("pass its checks"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_images_list_and_export_count_one_in_the_singular() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 800));
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));

    let out = env.run(&["verify"]).await;
    assert!(
        stdout(&out).contains("1 ledger row, 1 image listed in 1 page ("),
        "{}",
        text(&out)
    );
    let out = env.run(&["images", "list"]).await;
    assert!(stderr(&out).contains("cfimg: 1 image\n"), "{}", text(&out));
    let csv = env.dir.path().join("out.csv");
    let out = env
        .run(&["export", "--output", csv.to_str().unwrap()])
        .await;
    assert!(
        stderr(&out).contains("exported 1 row to "),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_refusal_is_printed_once_and_logs_hold_no_debug_text() {
    let env = TestEnv::with(
        cfimg::emulator::EmulatorConfig {
            api_rate_limit: None,
            batch_rate_limit: None,
            max_images: 2,
            ..Default::default()
        },
        "",
    )
    .await;
    for i in 0..12 {
        env.write(&format!("f{i}.png"), &png(i, 900));
    }
    let src = env.src.to_str().unwrap();
    let out = env
        .cmd(&["migrate", src, "--force"])
        .env("RUST_LOG", "cfimg=info")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let all = text(&out);
    assert_eq!(all.matches("code 5453").count(), 1, "{all}");
    // Nothing of Rust's Debug form: `Fits { to_add: .. }`, `Some(..)`, `Ok(..)`.
    for debug in ["Fits {", "Some(", "Ok(", "Err("] {
        assert!(!all.contains(debug), "{debug} in {all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_and_temporary_files_are_counted_and_listed() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 800));
    env.write(".hidden.png", &png(2, 800));
    env.write("b.png.part", &png(3, 800));
    env.write(".git/objects/ab/cdef", b"object");
    env.write(".git/HEAD", b"ref: refs/heads/main\n");
    let src = env.src.to_str().unwrap();
    let out = env.run(&["migrate", src]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("skipped: 3 hidden or temporary files"),
        "{}",
        text(&out)
    );
    let f = failures(&env).await;
    for key in [".hidden.png", "b.png.part", ".git/"] {
        assert_eq!(field(&f, key, "state"), "ignored", "{f:#?}");
    }
    // One row for the hidden folder, not one per file in it.
    assert_eq!(f.len(), 3, "{f:#?}");
    assert_eq!(env.upload_posts(), 1);
    let (_, summary, _) = env.migrate(&[]).await;
    assert_eq!(summary["hidden_or_temporary"], 3, "{summary}");
    assert_eq!(summary["uploaded"], 0, "{summary}");
    // Counted again, but not written again: a no-op rerun only reads those rows.
    let again = failures(&env).await;
    assert_eq!(
        field(&again, ".hidden.png", "updated_at"),
        field(&f, ".hidden.png", "updated_at")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_404_in_remote_mode_is_rejected_after_one_request() {
    let env = TestEnv::new().await;
    let origin = Origin::start().await;
    let missing = origin.img("missing.png");
    let file = manifest(&env, "urls.txt", &format!("{missing}\n"));
    let out = env
        .run(&["migrate", "--manifest", file.to_str().unwrap(), "--json"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let f = failures(&env).await;
    assert_eq!(field(&f, &missing, "state"), "rejected", "{f:#?}");
    assert!(field(&f, &missing, "reason").contains("5454"), "{f:#?}");
    assert_eq!(
        origin.hits("/img/missing.png"),
        1,
        "fetched once, not six times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_error_names_its_cause() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 800));
    let closed = closed_port_url("/client/v4").await;
    reconfigure(
        &env,
        &format!("api_base_url = \"{}\"", env.emu.api_base()),
        &format!("api_base_url = \"{closed}\""),
    );
    reconfigure(&env, "[upload]", "[upload]\nmax_attempts = 1");
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 75, "{}", text(&out));
    let err = stderr(&out).to_lowercase();
    let host = closed
        .trim_start_matches("http://")
        .trim_end_matches("/client/v4");
    assert!(err.contains(&format!("cannot connect to {host}")), "{err}");
    assert!(err.contains("connection refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_points_at_api_base_url() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 800));
    let base = env.emu.api_base().to_string();
    let without = base.trim_end_matches('/').trim_end_matches("/client/v4");
    reconfigure(
        &env,
        &format!("api_base_url = \"{base}\""),
        &format!("api_base_url = \"{without}\""),
    );
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 2, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("code 7003"), "{err}");
    assert!(
        err.contains("`api_base_url`") && err.contains("/client/v4"),
        "{err}"
    );
}

/// An API base behind a redirect (a proxy, an old host) stops the run before any upload,
/// naming the setting: the token is never sent on to where the redirect points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_redirects_stops_the_run_naming_the_base_url() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 800));
    let target = env.emu.api_base();
    let moved = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let to = format!(
            "{target}{}",
            uri.path_and_query()
                .map_or("", |p| p.as_str())
                .trim_start_matches("/client/v4")
        );
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, to)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, moved).await });
    reconfigure(
        &env,
        &format!("api_base_url = \"{}\"", env.emu.api_base()),
        &format!("api_base_url = \"http://{addr}/client/v4\""),
    );
    let (code, _, out) = env.migrate(&[]).await;
    server.abort();
    assert_eq!(code, 3, "{}", text(&out));
    assert!(stderr(&out).contains("api_base_url"), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("a redirect to {}", env.emu.api_base())),
        "it says where the redirect pointed: {}",
        text(&out)
    );
    assert_eq!(
        env.inspect().requests.iter().map(|r| r.count).sum::<u64>(),
        0,
        "nothing followed the redirect to the service"
    );
}
