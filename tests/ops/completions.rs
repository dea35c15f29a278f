//! `cfimg completions bash` loads into a real bash and completes commands and flags;
//! `cfimg man --out DIR` writes a page per command that `man -l` renders without a warning.

use std::path::Path;
use std::process::Command;

fn cfimg(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args(args)
        .env_remove("CFIMG_CONFIG")
        .output()
        .expect("cfimg runs")
}

/// What bash offers for the words of `line` (the last one being completed), using the
/// script `cfimg completions bash` printed, loaded the way bash-completion loads it.
fn bash_completes(script: &Path, line: &[&str]) -> Vec<String> {
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let cword = line.len() - 1;
    let cur = line[cword];
    let prev = line[cword - 1];
    let body = format!(
        "source '{}' || exit 3\n\
         complete -p cfimg >/dev/null || exit 4\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n\
         func=$(complete -p cfimg | sed -E 's/.*-F ([^ ]+).*/\\1/')\n\
         \"$func\" cfimg '{cur}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &body])
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "bash: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_loads_the_completion_and_completes_commands_and_flags() {
    let out = cfimg(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("cfimg.bash");
    std::fs::write(&script, &out.stdout).expect("script written");

    assert_eq!(bash_completes(&script, &["cfimg", "mig"]), ["migrate"]);
    assert_eq!(
        bash_completes(&script, &["cfimg", "ledger", "reb"]),
        ["rebuild"]
    );
    assert_eq!(
        bash_completes(&script, &["cfimg", "migrate", "--dry"]),
        ["--dry-run"]
    );
    let subcommands = bash_completes(&script, &["cfimg", ""]);
    for name in ["watch", "status", "completions", "man"] {
        assert!(
            subcommands.iter().any(|s| s == name),
            "{name} not offered: {subcommands:?}"
        );
    }
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    for shell in ["zsh", "fish"] {
        let out = cfimg(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("migrate") && text.contains("rebuild"),
            "{shell}:\n{text}"
        );
    }
    let out = cfimg(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error: {out:?}"
    );
}

#[test]
fn man_writes_a_page_per_command_and_man_renders_each() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pages = dir.path().join("man1");
    let out = cfimg(&["man", "--out", pages.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for page in [
        "cfimg.1",
        "cfimg-migrate.1",
        "cfimg-ledger-rebuild.1",
        "cfimg-man.1",
    ] {
        assert!(
            listed.iter().any(|l| l.ends_with(page)),
            "{page} not written: {listed:?}"
        );
    }
    for page in &listed {
        let out = Command::new("man")
            .args(["-l", page])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("man runs (apt-get install man-db groff-base)");
        let text = String::from_utf8_lossy(&out.stdout);
        let name = Path::new(page)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        assert!(out.status.success(), "man -l {page}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "man -l {page} warned: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("NAME") && text.contains(name) && text.contains("SYNOPSIS"),
            "man -l {page} rendered:\n{text}"
        );
    }
}

#[test]
fn man_into_a_folder_that_cannot_be_made_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("file");
    let under = file.join("man1");
    let out = cfimg(&["man", "--out", under.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write the pages there"), "{err}");
}
