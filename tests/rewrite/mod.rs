//! `cfimg rewrite` end to end: files migrated to the emulator, pages and a WordPress dump
//! rewritten to their delivery URLs and undone; Chromium loading a rewritten page.

mod browser;
mod cli;

/// The old base of the fixtures.
pub const BASE: &str = "https://www.example.com/wp-content/uploads/";

/// Every `s:N:\"...\";` in a SQL dump holds N bytes once unescaped: the length prefixes
/// `unserialize` checks. Returns how many strings were checked.
pub fn serialized_lengths_ok(dump: &[u8]) -> Result<usize, String> {
    let mut checked = 0;
    let mut i = 0;
    while let Some(at) = find(dump, b"s:", i) {
        i = at + 2;
        let mut j = i;
        while j < dump.len() && dump[j].is_ascii_digit() {
            j += 1;
        }
        if j == i || !dump[j..].starts_with(b":\\\"") {
            continue;
        }
        let n: usize = std::str::from_utf8(&dump[i..j]).unwrap().parse().unwrap();
        let mut k = j + 3;
        for _ in 0..n {
            k += if dump.get(k) == Some(&b'\\') { 2 } else { 1 };
        }
        if !dump.get(k..).is_some_and(|r| r.starts_with(b"\\\";")) {
            return Err(format!(
                "s:{n} at byte {at} does not end after {n} bytes: {}",
                String::from_utf8_lossy(&dump[at..(at + n + 40).min(dump.len())])
            ));
        }
        checked += 1;
    }
    Ok(checked)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The SQL strings of a mysqldump that hold a serialized array (`'a:...'`), unescaped.
pub fn serialized_values(dump: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < dump.len() {
        if dump[i] == b'\'' && dump[i + 1..].starts_with(b"a:") {
            let mut value = Vec::new();
            let mut j = i + 1;
            while j < dump.len() && dump[j] != b'\'' {
                if dump[j] == b'\\' && j + 1 < dump.len() {
                    value.push(match dump[j + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b'0' => 0,
                        c => c,
                    });
                    j += 2;
                } else {
                    value.push(dump[j]);
                    j += 1;
                }
            }
            out.push(value);
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// PHP's own `unserialize` on each value (Debian's php-cli, installed by `.ci/run`): the
/// JSON of each decoded value, or `None` when PHP is not installed (the byte-length check
/// above still runs). Panics when PHP refuses a value.
pub fn php_unserialize(values: &[Vec<u8>]) -> Option<Vec<serde_json::Value>> {
    let php = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("php"))
            .find(|p| p.is_file())
    })?;
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, v) in values.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:04}")), v).expect("write value");
    }
    let script = r#"$out = [];
foreach (glob($argv[1] . '/*') as $f) {
    $v = @unserialize(file_get_contents($f));
    if ($v === false) { fwrite(STDERR, "unserialize refused " . $f . "\n"); exit(1); }
    $out[] = $v;
}
echo json_encode($out, JSON_UNESCAPED_SLASHES);"#;
    let out = std::process::Command::new(php)
        .args(["-r", script, dir.path().to_str().expect("utf-8")])
        .output()
        .expect("php runs");
    assert!(
        out.status.success(),
        "PHP's unserialize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PHP's JSON")
}
