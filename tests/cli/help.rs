//! Every command's `--help`, as the binary prints it: its own examples and credentials, the
//! shared options under their own heading and only where they do something, and each
//! environment variable named once.

use clap::CommandFactory;

/// Every command path: `[]` for `cfimg` itself, `["images", "get"]`, ...
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(&cfimg::cli::Cli::command(), Vec::new(), &mut out);
    out
}

/// `cfimg PATH... --help` (long help) and `-h` (short), from the binary.
async fn help(path: &[String]) -> (String, String) {
    let mut texts = Vec::new();
    for flag in ["--help", "-h"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"))
            .args(path)
            .arg(flag)
            .env_remove("CFIMG_CONFIG")
            .env_remove("CFIMG_SHARD")
            .env_remove("CFIMG_EMULATOR_WEBHOOK_SECRET")
            .output()
            .await
            .expect("cfimg runs");
        assert_eq!(out.status.code(), Some(0), "{path:?} {flag}: {out:?}");
        texts.push(String::from_utf8(out.stdout).expect("utf-8"));
    }
    let short = texts.pop().unwrap_or_default();
    (texts.pop().unwrap_or_default(), short)
}

/// The part of a help text under `heading` (up to the next heading).
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n{heading}:\n"))? + heading.len() + 3;
    let rest = &text[start..];
    let end = rest
        .find("\n\n")
        .and_then(|i| {
            // The section ends at the first line that starts a new heading.
            rest[i..]
                .lines()
                .skip(2)
                .find(|l| !l.starts_with(' ') && l.ends_with(':'))
                .and_then(|l| rest.find(&format!("\n{l}\n")))
        })
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[tokio::test]
async fn every_command_ends_with_examples_and_names_the_credentials_it_reads() {
    let paths = command_paths();
    assert!(paths.len() > 30, "{paths:?}");
    for path in &paths {
        let (long, short) = help(path).await;
        for (kind, text) in [("--help", &long), ("-h", &short)] {
            let examples = text
                .find("\nExamples:\n")
                .unwrap_or_else(|| panic!("cfimg {path:?} {kind} has no Examples part:\n{text}"));
            let lines: Vec<&str> = text[examples..]
                .lines()
                .skip(2)
                .take_while(|l| l.starts_with("  cfimg "))
                .collect();
            assert!(
                !lines.is_empty() && lines.len() <= 3,
                "cfimg {path:?} {kind}: one to three examples, got {lines:?}"
            );
            // Each example's command is the one whose help this is.
            let name = format!("  cfimg {}", path.join(" "));
            assert!(
                path.is_empty() || lines.iter().all(|l| l.starts_with(name.trim_end())),
                "cfimg {path:?} {kind}: {lines:?}"
            );
            assert!(
                text.contains("Credentials: "),
                "cfimg {path:?} {kind} names no credentials:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn no_help_names_an_environment_variable_twice() {
    for path in command_paths() {
        let (long, short) = help(&path).await;
        for text in [&long, &short] {
            let mut seen = std::collections::HashSet::new();
            for part in text.split("[env: ").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let whole = part.split(']').next().unwrap_or_default();
                assert!(
                    seen.insert(name.clone()),
                    "cfimg {path:?}: [env: {name}] twice:\n{text}"
                );
                assert!(
                    !whole.contains('='),
                    "cfimg {path:?} shows the value of {name}: [env: {whole}]"
                );
            }
        }
    }
}

#[tokio::test]
async fn ledger_appears_only_on_commands_with_a_ledger_under_the_global_heading() {
    let without = [
        "emulator",
        "sign-url",
        "variants",
        "variants list",
        "variants create",
        "keys",
        "keys add",
        "images",
        "images get",
        "images list",
        "flexible-variants",
    ];
    for cmd in without {
        let path: Vec<String> = cmd.split(' ').map(String::from).collect();
        let (long, short) = help(&path).await;
        for text in [&long, &short] {
            assert!(!text.contains("--ledger"), "cfimg {cmd} --help:\n{text}");
            let global = section(text, "Global options")
                .unwrap_or_else(|| panic!("cfimg {cmd}: no Global options heading:\n{text}"));
            assert!(global.contains("--config"), "{global}");
        }
    }
    for cmd in [
        "migrate",
        "watch",
        "status",
        "failures",
        "validate",
        "export",
        "verify",
        "ledger rebuild",
        "direct-upload create",
        "direct-upload status",
        "serve",
        "images delete",
    ] {
        let path: Vec<String> = cmd.split(' ').map(String::from).collect();
        let (long, short) = help(&path).await;
        for text in [&long, &short] {
            let global = section(text, "Global options")
                .unwrap_or_else(|| panic!("cfimg {cmd}: no Global options heading:\n{text}"));
            for flag in [
                "--ledger",
                "--config",
                "--verbose",
                "--quiet",
                "--log-format",
            ] {
                assert!(
                    global.contains(flag),
                    "cfimg {cmd}: {flag} not under Global options:\n{text}"
                );
            }
            let own = section(text, "Options").unwrap_or_default();
            for flag in ["--ledger", "--config", "--log-format"] {
                assert!(
                    !own.contains(flag),
                    "cfimg {cmd}: {flag} among its own options:\n{own}"
                );
            }
        }
    }
}

#[tokio::test]
async fn ledger_before_the_command_still_works_and_is_refused_where_it_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sqlite");
    let missing = missing.to_str().unwrap();
    let run = |args: Vec<&str>| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"));
        c.args(args)
            .env_remove("CFIMG_CONFIG")
            .env_remove("CFIMG_LEDGER")
            .current_dir(dir.path());
        c
    };
    // Before or after the command, the same ledger is meant.
    for args in [
        vec!["--ledger", missing, "status"],
        vec!["status", "--ledger", missing],
    ] {
        let out = run(args.clone()).output().await.unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains(missing), "{args:?}: {all}");
    }
    // On a command without a ledger it is a usage error, before the command starts.
    let out = run(vec![
        "--ledger",
        missing,
        "emulator",
        "--listen",
        "127.0.0.1:0",
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ledger does nothing for `cfimg emulator`"),
        "{out:?}"
    );
    let out = run(vec![
        "sign-url",
        "https://x/h/i/public",
        "--expires-in",
        "1h",
        "--ledger",
        missing,
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Splits a POSIX shell line into words (single quotes only, as the examples use) and stops
/// at a redirection or `&`.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out.into_iter()
        .take_while(|w| w != ">" && w != "&")
        .collect()
}

#[tokio::test]
async fn every_example_in_the_help_parses() {
    use clap::Parser;
    for path in command_paths() {
        let (long, _) = help(&path).await;
        let Some(at) = long.find("\nExamples:\n") else {
            continue;
        };
        for line in long[at..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with("  cfimg "))
        {
            let line = line.split("  #").next().unwrap_or_default();
            for command in line.split("&&") {
                let argv = words(command.trim());
                let parsed = cfimg::cli::Cli::try_parse_from(&argv);
                assert!(
                    parsed.is_ok(),
                    "{argv:?}: {}",
                    parsed.err().map(|e| e.to_string()).unwrap_or_default()
                );
            }
        }
    }
}
