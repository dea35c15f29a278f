//! `--shard K/N`: three shards as separate processes against one emulator take every file
//! exactly once between them, never touch each other's items, and a killed shard resumes.

use std::collections::BTreeSet;
use std::time::Duration;

use cfimg::emulator::Faults;

use crate::common::{TestEnv, text};

fn rows_of(ledger: &std::path::Path) -> Vec<cfimg::ledger::Row> {
    cfimg::ledger::Ledger::open_read_only(ledger)
        .expect("ledger opens")
        .expect("ledger exists")
        .all_rows()
        .expect("rows")
}

fn keys_of(ledger: &std::path::Path) -> BTreeSet<String> {
    rows_of(ledger).into_iter().map(|r| r.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_take_every_file_exactly_once_and_a_killed_one_resumes() {
    let env = TestEnv::new().await;
    let keys: Vec<String> = (0..60).map(|i| format!("s{}/img{i}.png", i % 5)).collect();
    let keys = env.write_pngs(&keys, 1500);
    let ledgers: Vec<_> = (0..3)
        .map(|k| env.dir.path().join(format!("shard-{k}.sqlite")))
        .collect();
    let src = env.src.to_str().unwrap().to_string();

    // Shard 1 is slowed down (one upload at a time, each answer 200 ms late: its 14 items
    // take 3 s) and killed once the others' first answers came (after 200 ms); shards 0 and
    // 2 run to the end meanwhile.
    env.emu.set_faults(Faults {
        seed: 8,
        p_latency: 1.0,
        latency_ms: 200,
        ..Faults::default()
    });
    let spawn = |k: usize, concurrency: &str| {
        env.cmd(&[
            "--ledger",
            ledgers[k].to_str().unwrap(),
            "migrate",
            &src,
            "--shard",
            &format!("{k}/3"),
            "--concurrency",
            concurrency,
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let mut killed = spawn(1, "1");
    let others = [spawn(0, "8"), spawn(2, "8")];
    env.wait_for(Duration::from_secs(30), |e| e.upload_posts() >= 6)
        .await;
    killed.start_kill().unwrap();
    let status = killed.wait().await.unwrap();
    assert_eq!(status.code(), None, "shard 1 was killed mid-way");
    // What it had uploaded (an intent's row is not an upload).
    let partial = rows_of(&ledgers[1])
        .iter()
        .filter(|r| r.state == cfimg::ledger::State::Uploaded)
        .count();
    for child in others {
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    env.emu.set_faults(Faults::default());
    let out = env
        .run(&[
            "--ledger",
            ledgers[1].to_str().unwrap(),
            "migrate",
            &src,
            "--shard",
            "1/3",
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let sets: Vec<BTreeSet<String>> = ledgers.iter().map(|l| keys_of(l)).collect();
    assert!(
        partial < sets[1].len(),
        "shard 1 had uploaded {partial} of its {} items when killed",
        sets[1].len()
    );
    for (i, a) in sets.iter().enumerate() {
        assert!(!a.is_empty(), "shard {i} took nothing");
        for b in &sets[i + 1..] {
            assert!(a.is_disjoint(b), "two shards recorded the same item");
        }
    }
    let union: BTreeSet<String> = sets.iter().flatten().cloned().collect();
    assert_eq!(union, keys.iter().cloned().collect::<BTreeSet<_>>());
    let per_source = env.images_per_source();
    for key in &keys {
        assert_eq!(per_source.get(&env.stamp_of(key)), Some(&1), "{key}");
    }
    assert_eq!(env.inspect().images.len(), keys.len());
}
