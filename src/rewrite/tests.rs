//! The rewriter's guarantees on generated and fixture inputs: matches across read
//! boundaries, no byte changed outside a replaced span, serialized lengths corrected,
//! undo restores the input.

use std::collections::HashMap;

use super::engine::{Edit, Matcher, Miss, Options};
use super::files::{Missed, rewrite_bytes};
use super::forms::Bases;

const BASE: &str = "https://www.example.com/wp-content/uploads/";
const DELIVERY: &str = "https://imagedelivery.net/HASH";

fn matcher() -> Matcher {
    Matcher::new(Bases::new(&[BASE.to_string()]).unwrap()).unwrap()
}

/// Maps `BASE + key` for the keys given to a delivery URL with the `public` variant.
fn ledger(keys: &[&str]) -> HashMap<String, String> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| (format!("{BASE}{k}"), format!("{DELIVERY}/id-{i}/public")))
        .collect()
}

fn run(
    input: &[u8],
    map: &HashMap<String, String>,
    chunk: usize,
) -> (Vec<u8>, Vec<Edit>, Vec<Missed>) {
    let opts = Options {
        chunk,
        srcset_widths: false,
    };
    rewrite_bytes(&matcher(), input, &mut |u| map.get(u).cloned(), &opts).unwrap()
}

/// The output is the input with exactly the edits applied: every other byte identical.
fn check_spans(input: &[u8], output: &[u8], edits: &[Edit]) {
    let mut rebuilt = Vec::new();
    let mut pos = 0usize;
    for e in edits {
        let at = e.at as usize;
        assert!(at >= pos, "edits in order, not overlapping");
        assert_eq!(
            &input[at..at + e.old.len()],
            &e.old[..],
            "old bytes at {at}"
        );
        rebuilt.extend_from_slice(&input[pos..at]);
        rebuilt.extend_from_slice(&e.new);
        pos = at + e.old.len();
    }
    rebuilt.extend_from_slice(&input[pos..]);
    assert_eq!(rebuilt, output, "output = input outside the spans");
}

/// Puts the old bytes back (what `--undo` does, in memory).
fn undo(output: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut back = Vec::new();
    let (mut pos, mut shift) = (0usize, 0i64);
    for e in edits {
        let at = (e.at as i64 + shift) as usize;
        back.extend_from_slice(&output[pos..at]);
        assert_eq!(&output[at..at + e.new.len()], &e.new[..]);
        back.extend_from_slice(&e.old);
        pos = at + e.new.len();
        shift += e.new.len() as i64 - e.old.len() as i64;
    }
    back.extend_from_slice(&output[pos..]);
    back
}

#[test]
fn every_form_is_found_in_html_css_markdown_and_json() {
    let map = ledger(&["2019/cat.jpg", "2019/dog.png"]);
    let input = format!(
        "<img src=\"{BASE}2019/cat.jpg\" srcset=\"//www.example.com/wp-content/uploads/2019/cat.jpg 1x, /wp-content/uploads/2019/dog.png 2x\">\n\
         <div style=\"background:url('http://www.example.com/wp-content/uploads/2019/dog.png')\"></div>\n\
         ![cat](/wp-content/uploads/2019/cat.jpg) and {BASE}2019/cat.jpg.\n\
         {{\"u\":\"https:\\/\\/www.example.com\\/wp-content\\/uploads\\/2019\\/dog.png\"}}\n\
         not ours: https://cdn.other.com/wp-content/uploads/2019/cat.jpg x/wp-content/uploads/2019/cat.jpg\n\
         missing: {BASE}2020/gone.jpg?ver=2\n"
    );
    let (out, edits, missed) = run(input.as_bytes(), &map, 1 << 20);
    let out = String::from_utf8(out).unwrap();
    check_spans(input.as_bytes(), out.as_bytes(), &edits);
    assert_eq!(edits.len(), 7, "{out}");
    assert!(
        out.contains("src=\"https://imagedelivery.net/HASH/id-0/public\""),
        "{out}"
    );
    assert!(out.contains("srcset=\"https://imagedelivery.net/HASH/id-0/public 1x, https://imagedelivery.net/HASH/id-1/public 2x\""), "{out}");
    assert!(
        out.contains("url('https://imagedelivery.net/HASH/id-1/public')"),
        "{out}"
    );
    assert!(out.contains("![cat](https://imagedelivery.net/HASH/id-0/public) and https://imagedelivery.net/HASH/id-0/public."), "{out}");
    assert!(
        out.contains(r#"{"u":"https:\/\/imagedelivery.net\/HASH\/id-1\/public"}"#),
        "{out}"
    );
    assert!(
        out.contains("https://cdn.other.com/wp-content/uploads/2019/cat.jpg x/wp-content"),
        "{out}"
    );
    assert_eq!(
        missed,
        vec![(6, format!("{BASE}2020/gone.jpg"), Miss::NotMapped)]
    );
    assert_eq!(undo(out.as_bytes(), &edits), input.as_bytes());
}

#[test]
fn srcset_widths_become_flexible_variants_when_asked() {
    let map = ledger(&["a.jpg", "b.jpg"]);
    let input = format!("<img srcset=\"{BASE}a.jpg 320w, {BASE}b.jpg 1024w\" src=\"{BASE}a.jpg\">");
    let opts = Options {
        chunk: 5,
        srcset_widths: true,
    };
    let (out, _, _) = rewrite_bytes(
        &matcher(),
        input.as_bytes(),
        &mut |u| map.get(u).cloned(),
        &opts,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "<img srcset=\"https://imagedelivery.net/HASH/id-0/w=320 320w, https://imagedelivery.net/HASH/id-1/w=1024 1024w\" src=\"https://imagedelivery.net/HASH/id-0/public\">"
    );
}

/// Generated inputs: random text, old URLs (mapped or not, in every spelling) and
/// serialized strings; every chunk size gives the same output, that output differs from the
/// input only inside the edits, and undoing the edits gives the input back.
#[test]
fn generated_inputs_change_only_the_replaced_spans_whatever_the_chunk_size() {
    let keys: Vec<String> = (0..20)
        .map(|i| format!("20{:02}/img-{i}.jpg", i % 7))
        .collect();
    let mapped: Vec<&str> = keys.iter().step_by(2).map(String::as_str).collect();
    let map = ledger(&mapped);
    let mut rng = fastrand::Rng::with_seed(22);
    let filler = [
        "<p>", " ", "\n", "x", "é", "url(", "\"", "'", "\\", "/", "s:", "s:3:\"", "https://", "//",
        ",", ") ", "?v=1", "#", "\u{0}",
    ];
    let (mut replaced, mut lengths) = (0, 0);
    for round in 0..60 {
        let mut input = Vec::new();
        for _ in 0..rng.usize(1..80) {
            match rng.u8(0..4) {
                0 => {
                    let key = &keys[rng.usize(0..keys.len())];
                    let url = match rng.u8(0..6) {
                        0 => format!("{BASE}{key}"),
                        1 => format!("http://www.example.com/wp-content/uploads/{key}"),
                        2 => format!("//www.example.com/wp-content/uploads/{key}"),
                        3 => format!(" /wp-content/uploads/{key}"),
                        4 => format!("{BASE}{key}").replace('/', "\\/"),
                        _ => format!("{BASE}{key}").replace('/', "\\\\/"),
                    };
                    input.extend_from_slice(url.as_bytes());
                }
                1 => {
                    let key = &keys[rng.usize(0..keys.len())];
                    let body = format!("<img src=\"{BASE}{key}\">");
                    input.extend_from_slice(
                        format!("s:{}:\\\"{}\\\";", body.len(), body.replace('"', "\\\""))
                            .as_bytes(),
                    );
                }
                _ => input.extend_from_slice(filler[rng.usize(0..filler.len())].as_bytes()),
            }
        }
        let (first, edits, _) = run(&input, &map, 1 << 20);
        check_spans(&input, &first, &edits);
        for e in &edits {
            if e.old.iter().all(u8::is_ascii_digit) {
                lengths += 1;
            } else {
                replaced += 1;
            }
        }
        assert_eq!(undo(&first, &edits), input, "round {round}");
        for chunk in [1, 2, 3, 7, 64] {
            let (out, e, _) = run(&input, &map, chunk);
            assert_eq!(out, first, "round {round}, chunk {chunk}");
            assert_eq!(e, edits, "round {round}, chunk {chunk}");
        }
    }
    assert!(
        replaced > 300 && lengths > 30,
        "{replaced} URLs, {lengths} lengths"
    );
}

#[test]
fn a_url_split_across_reads_is_found_with_one_byte_reads() {
    let map = ledger(&["2019/cat.jpg"]);
    let input = format!(
        "{}<img src=\"{BASE}2019/cat.jpg\">{}",
        "a".repeat(5000),
        "b".repeat(3000)
    );
    for chunk in [1, 13, 4096] {
        let (out, edits, _) = run(input.as_bytes(), &map, chunk);
        assert_eq!(edits.len(), 1, "chunk {chunk}");
        assert_eq!(edits[0].at, 5010);
        check_spans(input.as_bytes(), &out, &edits);
    }
}

/// A minimal `unserialize` for the checks: the value's end, or why it is not valid.
fn unserialize(b: &[u8], mut i: usize) -> Result<usize, String> {
    let num = |i: &mut usize, end: u8| -> Result<i64, String> {
        let s = *i;
        while *i < b.len() && b[*i] != end {
            *i += 1;
        }
        let n = std::str::from_utf8(&b[s..*i])
            .unwrap()
            .parse::<i64>()
            .map_err(|e| format!("{e} at {s}"))?;
        *i += 1;
        Ok(n)
    };
    match b.get(i) {
        Some(b's') => {
            i += 2;
            let n = num(&mut i, b':')? as usize;
            if b.get(i) != Some(&b'"')
                || b.get(i + 1 + n) != Some(&b'"')
                || b.get(i + 2 + n) != Some(&b';')
            {
                return Err(format!("string of {n} bytes at {i} does not end there"));
            }
            Ok(i + 3 + n)
        }
        Some(b'i') => {
            i += 2;
            num(&mut i, b';')?;
            Ok(i)
        }
        Some(b'b') => Ok(i + 4),
        Some(b'N') => Ok(i + 2),
        Some(b'a') => {
            i += 2;
            let n = num(&mut i, b':')?;
            i += 1; // {
            for _ in 0..n * 2 {
                i = unserialize(b, i)?;
            }
            if b.get(i) != Some(&b'}') {
                return Err(format!("array does not close at {i}"));
            }
            Ok(i + 1)
        }
        other => Err(format!("unexpected {other:?} at {i}")),
    }
}

/// mysqldump's string unescaping.
fn sql_unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() {
            out.push(match s[i + 1] {
                b'n' => b'\n',
                b'r' => b'\r',
                b'0' => 0,
                c => c,
            });
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The WordPress fixture: `_wp_attachment_metadata` and a widget option, as mysqldump
/// writes them, with nested arrays, a serialized string inside a serialized string, and
/// JSON post meta with escaped slashes.
pub(crate) fn wordpress_dump() -> String {
    include_str!("../../tests/rewrite/wordpress.sql").to_string()
}

fn serialized_values(dump: &[u8]) -> Vec<Vec<u8>> {
    // Every '...' SQL string that starts like a serialized array.
    let mut out = Vec::new();
    let mut i = 0;
    while i < dump.len() {
        if dump[i] == b'\'' && dump[i + 1..].starts_with(b"a:") {
            let s = i + 1;
            let mut j = s;
            while dump[j] != b'\'' {
                j += if dump[j] == b'\\' { 2 } else { 1 };
            }
            out.push(sql_unescape(&dump[s..j]));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn serialized_lengths_in_a_wordpress_dump_are_corrected() {
    let dump = wordpress_dump();
    let before = serialized_values(dump.as_bytes());
    assert!(before.len() >= 3, "fixture has serialized rows");
    for v in &before {
        assert_eq!(
            unserialize(v, 0),
            Ok(v.len()),
            "fixture valid: {}",
            String::from_utf8_lossy(v)
        );
    }
    let map = ledger(&[
        "2019/05/cat.jpg",
        "2019/05/cat-300x200.jpg",
        "2019/05/cat-1024x683.jpg",
        "2020/01/header.png",
    ]);
    for chunk in [1 << 20, 3] {
        let (out, edits, missed) = run(dump.as_bytes(), &map, chunk);
        check_spans(dump.as_bytes(), &out, &edits);
        let after = serialized_values(&out);
        assert_eq!(after.len(), before.len());
        for v in &after {
            assert_eq!(
                unserialize(v, 0),
                Ok(v.len()),
                "still valid: {}",
                String::from_utf8_lossy(v)
            );
        }
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            !text.contains("www.example.com/wp-content/uploads/2019/05/cat.jpg"),
            "{text}"
        );
        assert!(
            text.contains(r"https:\\/\\/imagedelivery.net\\/HASH"),
            "JSON meta rewritten: {text}"
        );
        assert!(
            edits.iter().any(|e| e.old.iter().all(u8::is_ascii_digit)),
            "a length corrected"
        );
        assert_eq!(missed.len(), 1, "{missed:?}");
        assert_eq!(missed[0].1, format!("{BASE}2018/old/unknown.gif"));
        assert_eq!(undo(&out, &edits), dump.as_bytes());
    }
}

#[test]
fn a_prefix_that_is_not_a_serialized_string_is_left_and_an_oversized_one_is_not_touched() {
    let map = ledger(&["a.jpg"]);
    // Looks like a prefix, but the string does not end after 5 bytes: not corrected.
    let input = format!("s:5:\"<img src=\"{BASE}a.jpg\"> and more\"; s:3:\"abc\";");
    let (out, edits, _) = run(input.as_bytes(), &map, 4);
    assert_eq!(edits.len(), 1, "only the URL: {edits:?}");
    check_spans(input.as_bytes(), &out, &edits);
    // A serialized string over the limit: its URL stays, reported.
    let body = format!(
        "{BASE}a.jpg {}",
        "x".repeat(super::engine::MAX_SERIALIZED as usize)
    );
    let input = format!("s:{}:\"{body}\";", body.len());
    let (out, edits, missed) = run(input.as_bytes(), &map, 1 << 20);
    assert!(edits.is_empty());
    assert_eq!(out, input.as_bytes());
    assert_eq!(
        missed,
        vec![(1, format!("{BASE}a.jpg"), Miss::LongSerialized)]
    );
}

#[test]
fn a_root_relative_path_is_looked_up_under_every_host_that_served_it() {
    let bases = Bases::new(&[
        "https://a.example/up/".into(),
        "https://b.example/up/".into(),
    ])
    .unwrap();
    let m = Matcher::new(bases).unwrap();
    let map: HashMap<String, String> = [(
        "https://b.example/up/x.jpg".to_string(),
        format!("{DELIVERY}/id-b/public"),
    )]
    .into();
    let (out, edits, missed) = rewrite_bytes(
        &m,
        b"<img src=\"/up/x.jpg\">",
        &mut |u| map.get(u).cloned(),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("<img src=\"{DELIVERY}/id-b/public\">")
    );
    assert_eq!((edits.len(), missed.len()), (1, 0));
}
