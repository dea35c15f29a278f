//! A `--rate` above Cloudflare's documented average (4/s, 1,200 per 5 minutes) is warned
//! about at start, and the dry run's estimate does not believe it.

use crate::common::{TestEnv, png, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_above_the_accounts_average_is_warned_about_and_not_believed() {
    let env = TestEnv::new().await;
    for i in 0..8 {
        env.write(&format!("f{i}.png"), &png(i, 200));
    }
    let (code, summary, out) = env.migrate(&["--dry-run", "--rate", "10"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(--rate) 10/s is above Cloudflare's documented 4/s average")
            && err.contains("blocks every API call of the user for 5 minutes"),
        "{err}"
    );
    assert_eq!(
        summary["estimated_secs"].as_f64(),
        Some(8.0 / 4.0),
        "{summary}"
    );
    assert!(summary["rate_warning"].is_string(), "{summary}");

    // The text summary says it too, next to the estimate.
    let src = env.src.to_str().unwrap();
    let out = env
        .run(&["migrate", src, "--dry-run", "--rate", "10"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: `upload.rate` (--rate) 10/s"),
        "{stdout}"
    );

    // Within the limit: not a word.
    let (code, summary, out) = env.migrate(&["--dry-run", "--rate", "4"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("4/s average"));
    assert!(summary.get("rate_warning").is_none(), "{summary}");
    assert_eq!(summary["estimated_secs"].as_f64(), Some(8.0 / 4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_whose_rates_add_up_past_the_average_are_warned_about() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 200));
    let (_, _, out) = env
        .migrate(&["--dry-run", "--shard", "0/3", "--rate", "2"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in each of 3 shards is 6/s in all"), "{err}");
}
