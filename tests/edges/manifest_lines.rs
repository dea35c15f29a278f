//! A bad manifest line's record follows its content, not its line number (issue 17.9): a
//! line inserted above does not duplicate it, and fixing the line lets the next run take it
//! and drops the old record from `failures`.

use serde_json::Value;

use crate::common::origin::Origin;
use crate::common::{TestEnv, png, text};

async fn failures(env: &TestEnv) -> Vec<Value> {
    let out = env.run(&["failures", "--all", "--json"]).await;
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", text(&out)))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_manifest_line_is_taken_and_its_old_record_goes() {
    let env = TestEnv::new().await;
    let origin = Origin::start().await;
    for (i, name) in ["a.png", "b.png", "c.png"].iter().enumerate() {
        origin.put(name, png(300 + i as u32, 2000));
    }
    let list = env.dir.path().join("urls.txt");
    let run = |content: String| {
        std::fs::write(&list, content).unwrap();
        let list = list.clone();
        let env = &env;
        async move {
            env.run(&["migrate", "--manifest", list.to_str().unwrap(), "--json"])
                .await
        }
    };
    let broken = "htp:/typo/c.png";

    let out = run(format!("{}\n{broken}\n", origin.img("a.png"))).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let f = failures(&env).await;
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0]["reason"].as_str().unwrap().starts_with("line 2:"),
        "{f:#?}"
    );

    // A line inserted above: still one record for the bad line, now naming line 3.
    let out = run(format!(
        "{}\n{}\n{broken}\n",
        origin.img("b.png"),
        origin.img("a.png")
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let f = failures(&env).await;
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(
        f[0]["reason"].as_str().unwrap().starts_with("line 3:"),
        "{f:#?}"
    );

    // Fixed in place: uploaded, and nothing is left in `failures`.
    let out = run(format!(
        "{}\n{}\n{}\n",
        origin.img("b.png"),
        origin.img("a.png"),
        origin.img("c.png")
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_eq!(failures(&env).await, Vec::<Value>::new());
    assert_eq!(env.inspect().images.len(), 3);
}
