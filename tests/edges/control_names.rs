//! A file whose name holds a control character (CR, LF, ESC) or a backslash uploads: the
//! upload part's `filename` is percent-encoded (RFC 7578 section 4.2) instead of carrying raw
//! control bytes that make the multipart body malformed (Cloudflare answers 5400), and the
//! ledger keeps the original name as the key.

use crate::common::{TestEnv, png, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_control_characters_upload_and_keep_their_key() {
    let env = TestEnv::new().await;
    let names = [
        "cr\rname.png",
        "esc\u{1b}[2K.png",
        "nl\nname.png",
        "back\\slash.png",
        "tab\tname.png",
    ];
    for (i, n) in names.iter().enumerate() {
        env.write(n, &png(i as u32, 1500));
    }
    let (code, summary, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], names.len(), "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");

    let rows = env.ledger_rows();
    for n in names {
        let row = rows
            .get(n)
            .unwrap_or_else(|| panic!("no row keyed {n:?}: {rows:?}"));
        assert!(row.image_id.is_some(), "{n:?} has no image: {row:?}");
    }
    let mut stored: Vec<String> = env
        .inspect()
        .images
        .into_iter()
        .filter_map(|i| i.filename)
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            "back%5Cslash.png",
            "cr%0Dname.png",
            "esc%1B[2K.png",
            "nl%0Aname.png",
            "tab%09name.png"
        ],
        "the image's filename is the name, percent-encoded where it must be"
    );
    env.assert_exactly_once(&names).await;
}
