//! The command on a site folder and a WordPress dump: every old URL form replaced by the
//! recorded delivery URL, serialized lengths still right, misses named with file and line,
//! and `--undo` giving every byte back.

use std::path::Path;

use super::{BASE, php_unserialize, serialized_lengths_ok, serialized_values};
use crate::common::{TestEnv, jpeg, png, sha256_file, text};

const KEYS: [&str; 5] = [
    "2019/05/cat.jpg",
    "2019/05/cat-300x200.jpg",
    "2019/05/cat-1024x683.jpg",
    "2020/01/header.png",
    "2019/05/my cat.png",
];

async fn migrated() -> TestEnv {
    let env = TestEnv::new().await;
    for (i, k) in KEYS.iter().enumerate() {
        let bytes = if k.ends_with(".png") {
            png(i as u32, 300)
        } else {
            jpeg(i as u32, 300)
        };
        env.write(&format!("wp-content/uploads/{k}"), &bytes);
    }
    let uploads = env.src.join("wp-content/uploads");
    let (code, _, out) = env.migrate_dir(&uploads, &[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    env
}

fn site(env: &TestEnv) -> std::path::PathBuf {
    let site = env.dir.path().join("site");
    let put = |rel: &str, body: &str| crate::common::write_in(&site, rel, body.as_bytes());
    put(
        "index.html",
        &format!(
            "<!doctype html>\n<img src=\"{BASE}2019/05/cat.jpg\" srcset=\"{BASE}2019/05/cat-300x200.jpg 300w, //www.example.com/wp-content/uploads/2019/05/cat-1024x683.jpg 1024w\">\n\
             <div style=\"background-image: url('/wp-content/uploads/2020/01/header.png')\"></div>\n\
             <img src=\"http://www.example.com/wp-content/uploads/2019/05/my%20cat.png\">\n\
             <a href=\"{BASE}2018/old/unknown.gif\">gone</a>\n"
        ),
    );
    put(
        "css/site.css",
        ".hero { background: url(\"/wp-content/uploads/2020/01/header.png\") no-repeat; }\n",
    );
    put(
        "posts/cat.md",
        &format!(
            "# Cat\n\n![cat]({BASE}2019/05/cat.jpg \"the cat\")\nSee {BASE}2019/05/cat.jpg.\n"
        ),
    );
    put(
        "data/images.json",
        "{\"hero\":\"https:\\/\\/www.example.com\\/wp-content\\/uploads\\/2020\\/01\\/header.png\"}\n",
    );
    put(
        "feed.xml",
        &format!(
            "<rss><item><enclosure url=\"{BASE}2019/05/cat.jpg\" type=\"image/jpeg\"/></item></rss>\n"
        ),
    );
    put("dump.sql", include_str!("wordpress.sql"));
    put("notes.bin", &format!("{BASE}2019/05/cat.jpg"));
    site
}

fn hashes(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().display().to_string(), sha256_file(e.path())))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_site_and_a_wordpress_dump_are_rewritten_reported_and_undone() {
    let env = migrated().await;
    let rows = env.ledger_rows();
    let url = |k: &str| rows[k].url.clone().expect("uploaded");
    let site = site(&env);
    let before = hashes(&site);
    let site_s = site.to_str().unwrap();

    // A dry run reports and writes nothing.
    let out = env.run(&["rewrite", "--old-base", BASE, site_s]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(hashes(&site), before, "a dry run changes nothing");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains(&format!(
            "missed\t{site_s}/index.html:5\t{BASE}2018/old/unknown.gif\t"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("dry run"), "{stdout}");

    // In place, one tiny read at a time: every URL straddles reads.
    let journal = env.dir.path().join("rewrite.journal");
    let out = env
        .run(&[
            "rewrite",
            "--old-base",
            BASE,
            "--in-place",
            "--journal",
            journal.to_str().unwrap(),
            "--chunk",
            "7",
            site_s,
        ])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the gif stays broken: {}",
        text(&out)
    );
    assert!(
        stdout.contains(&format!("missed\t{site_s}/dump.sql:")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{site_s}/index.html: 5 replaced")),
        "{stdout}"
    );
    let read = |rel: &str| std::fs::read_to_string(site.join(rel)).unwrap();
    let html = read("index.html");
    for k in [
        "2019/05/cat.jpg",
        "2019/05/cat-300x200.jpg",
        "2019/05/cat-1024x683.jpg",
        "2020/01/header.png",
        "2019/05/my cat.png",
    ] {
        assert!(html.contains(&url(k)), "{k} in {html}");
    }
    assert!(
        html.contains(&format!("{BASE}2018/old/unknown.gif")),
        "{html}"
    );
    assert!(read("css/site.css").contains(&format!("url(\"{}\")", url("2020/01/header.png"))));
    let md = read("posts/cat.md");
    assert!(
        md.contains(&format!("![cat]({} \"the cat\")", url("2019/05/cat.jpg"))),
        "{md}"
    );
    assert!(
        md.contains(&format!("See {}.", url("2019/05/cat.jpg"))),
        "{md}"
    );
    let json = read("data/images.json");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["hero"],
        url("2020/01/header.png"),
        "{json}"
    );
    assert!(read("feed.xml").contains(&url("2019/05/cat.jpg")));
    assert!(
        read("notes.bin").starts_with(BASE),
        "unknown extensions in a folder are left"
    );
    let dump = std::fs::read(site.join("dump.sql")).unwrap();
    let text_dump = String::from_utf8_lossy(&dump);
    assert!(
        !text_dump.contains("www.example.com/wp-content/uploads/2019"),
        "{text_dump}"
    );
    assert!(
        !text_dump.contains(r"www.example.com\\/wp-content"),
        "{text_dump}"
    );
    assert!(serialized_lengths_ok(&dump).unwrap() >= 20);
    let values = serialized_values(&dump);
    assert_eq!(values.len(), 3, "widget, theme mods, attachment metadata");
    match php_unserialize(&values) {
        Some(decoded) => {
            let all = serde_json::to_string(&decoded).unwrap();
            // The widget's HTML and the theme mods (and the serialized string inside them)
            // hold the new URLs once decoded.
            assert!(all.contains(&url("2019/05/cat-1024x683.jpg")), "{all}");
            assert!(all.contains(&url("2020/01/header.png")), "{all}");
            let theme = &decoded[1];
            let inner = theme["header_image_data"]
                .as_str()
                .expect("a serialized string");
            assert!(inner.contains(&url("2020/01/header.png")), "{inner}");
            php_unserialize(&[inner.as_bytes().to_vec()]).expect("php");
        }
        None => {
            eprintln!("php not installed: serialized lengths checked without PHP's unserialize")
        }
    }

    // Undo: every byte back.
    let out = env
        .run(&["rewrite", "--undo", journal.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        hashes(&site),
        before,
        "undo restores every file byte for byte"
    );

    // A second undo finds the files changed since the rewrite and leaves them.
    let out = env
        .run(&["rewrite", "--undo", journal.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("changed since the rewrite"));
    assert_eq!(hashes(&site), before);
}

#[tokio::test]
async fn output_folder_mirrors_the_input_and_leaves_it_alone() {
    let env = migrated().await;
    let rows = env.ledger_rows();
    let site = site(&env);
    let before = hashes(&site);
    let out_dir = env.dir.path().join("out");
    let out = env
        .run(&[
            "rewrite",
            "--old-base",
            "https://www.example.com/wp-content/uploads",
            "--variant",
            "thumb",
            "-o",
            out_dir.to_str().unwrap(),
            "--journal",
            env.dir.path().join("j").to_str().unwrap(),
            site.join("css/site.css").to_str().unwrap(),
            site.join("posts").to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(hashes(&site), before);
    let css = std::fs::read_to_string(out_dir.join("site.css")).unwrap();
    let want = rows["2020/01/header.png"]
        .url
        .clone()
        .unwrap()
        .replace("/public", "/thumb");
    assert!(css.contains(&want), "{css}");
    assert!(out_dir.join("cat.md").is_file());
    // Without a base there is nothing to look for.
    let out = env.run(&["rewrite", site.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
