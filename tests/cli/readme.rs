//! The README agrees with `--help`: its `migrate` flag table lists every flag `cfimg
//! migrate --help` shows (the global options are in the paragraph under it).

/// Long flags (`--name`) in `text`, in order of first appearance, without duplicates.
fn long_flags(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in text.match_indices("--") {
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let flag = format!("--{name}");
        if name.starts_with(|c: char| c.is_ascii_lowercase()) && !out.contains(&flag) {
            out.push(flag);
        }
    }
    out
}

#[tokio::test]
async fn the_readme_table_of_migrate_lists_every_flag_of_its_help() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args(["migrate", "--help"])
        .output()
        .await
        .expect("cfimg runs");
    let help = String::from_utf8(out.stdout).expect("utf-8");
    // The flags are the lines that start with one, in the option lists.
    let shown: Vec<String> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| {
            l.starts_with("--")
                || l.starts_with("-v, --")
                || l.starts_with("-q, --")
                || l.starts_with("-o, --")
        })
        .flat_map(|l| {
            long_flags(
                l.split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .as_str(),
            )
        })
        .filter(|f| f != "--help")
        .collect();
    assert!(shown.len() > 25, "{shown:?}");

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("### `cfimg migrate DIR`")
        .expect("the migrate section");
    let section = &readme[start..];
    let end = section
        .find("Every run ends with a summary")
        .expect("its end");
    let (table, global) = section[..end]
        .split_once("\nGlobal options")
        .expect("the table, then the global options");
    let listed = long_flags(table);
    let global = long_flags(global);
    let missing: Vec<&String> = shown
        .iter()
        .filter(|f| !listed.contains(f) && !global.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "README's migrate table lacks {missing:?}"
    );
    let stale: Vec<&String> = listed.iter().filter(|f| !shown.contains(f)).collect();
    assert!(
        stale.is_empty(),
        "README's migrate table lists {stale:?}, which --help does not know"
    );
}
