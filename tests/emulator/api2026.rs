//! What the Images API gained by 2026 (issue 21): v2 metadata filters with every operator
//! and their limits, `creator` on both lists, the flat variant, the deprecated JSON direct
//! upload, bracket-form metadata, expired drafts freeing their ids, rate-limit headers.

use reqwest::multipart::Form;
use serde_json::{Value, json};

use super::{Emu, code, file_part, png, status_json};

/// Uploads `png(n)` with custom id `id`, JSON metadata `meta` and an optional creator.
async fn put(emu: &Emu, n: u32, id: &str, meta: Value, creator: Option<&str>) {
    let mut form = Form::new()
        .part("file", file_part(png(n), "a.png"))
        .text("id", id.to_owned())
        .text("metadata", meta.to_string());
    if let Some(c) = creator {
        form = form.text("creator", c.to_owned());
    }
    let (status, body) = emu.upload(form).await;
    assert_eq!(status, 200, "{body}");
}

/// The ids a list answer holds, sorted.
fn ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["result"]["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

async fn list(emu: &Emu, path_and_query: &str) -> (u16, Value) {
    status_json(emu.get(path_and_query).send().await.unwrap()).await
}

#[tokio::test]
async fn v2_metadata_filters_take_every_documented_operator() {
    let emu = Emu::start().await;
    put(
        &emu,
        1,
        "a.png",
        json!({"status": "active", "priority": 5, "ok": true, "region": {"name": "eu"}}),
        None,
    )
    .await;
    put(
        &emu,
        2,
        "b.png",
        json!({"status": "pending", "priority": 2, "ok": false}),
        None,
    )
    .await;
    put(
        &emu,
        3,
        "c.png",
        json!({"status": "5", "priority": "5"}),
        None,
    )
    .await;
    for (query, want) in [
        ("meta.status[eq]=active", vec!["a.png"]),
        ("meta.status[eq:string]=5", vec!["c.png"]),
        ("meta.priority[eq:number]=5", vec!["a.png"]),
        ("meta.ok[eq:boolean]=false", vec!["b.png"]),
        ("meta.priority[gt]=2", vec!["a.png"]),
        ("meta.priority[gte:number]=2", vec!["a.png", "b.png"]),
        ("meta.priority[lt]=5", vec!["b.png"]),
        ("meta.priority[lte]=5", vec!["a.png", "b.png"]),
        ("meta.status[in]=pending%7Cactive", vec!["a.png", "b.png"]),
        ("meta.priority[in:number]=2%7C9", vec!["b.png"]),
        ("meta.region.name[eq]=eu", vec!["a.png"]),
        // AND, and a contradiction is an empty list, not an error.
        (
            "meta.priority[gte]=2&meta.ok[eq:boolean]=true",
            vec!["a.png"],
        ),
        (
            "meta.priority[eq:number]=5&meta.priority[lte:number]=3",
            vec![],
        ),
    ] {
        let (status, body) = list(&emu, &format!("/v2?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), want, "{query}");
    }
}

#[tokio::test]
async fn v2_metadata_filters_past_a_limit_are_5400_naming_it() {
    let emu = Emu::start().await;
    let six = (1..=6)
        .map(|i| format!("meta.k{i}[eq]=v"))
        .collect::<Vec<_>>()
        .join("&");
    let eleven = (1..=11)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("%7C");
    for (query, named) in [
        (
            six.as_str(),
            "Too many metadata filters: 6 provided, maximum 5 allowed",
        ),
        (
            "meta.a.b.c.d.e.f[eq]=x",
            "6 levels provided, maximum 5 allowed",
        ),
        (
            &format!("meta.n[in]={eleven}") as &str,
            "11 provided, maximum 10 allowed",
        ),
        ("meta.n[like]=x", "operator \"like\""),
        ("meta.n[gt]=many", "takes a number"),
    ] {
        let (status, body) = list(&emu, &format!("/v2?{query}")).await;
        assert_eq!((status, code(&body)), (400, 5400), "{query}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{query}: {message}");
    }
    // At the limits, it is answered.
    let five = (1..=5)
        .map(|i| format!("meta.k{i}[eq]=v"))
        .collect::<Vec<_>>()
        .join("&");
    let (status, body) = list(&emu, &format!("/v2?{five}&meta.a.b.c.d.e[eq]=x")).await;
    assert_eq!(status, 400, "six filters in all: {body}");
    let (status, body) = list(&emu, &format!("/v2?{five}")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn creator_filters_both_lists_and_empty_means_without_one() {
    let emu = Emu::start().await;
    put(&emu, 1, "mine.png", json!({}), Some("user1")).await;
    put(&emu, 2, "theirs.png", json!({}), Some("user2")).await;
    put(&emu, 3, "nobody.png", json!({}), None).await;
    for list_path in ["/v1?", "/v2?"] {
        let (status, body) = list(&emu, &format!("{list_path}creator=user1")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ids(&body), vec!["mine.png"], "{list_path}creator=user1");
        let (_, body) = list(&emu, &format!("{list_path}creator=")).await;
        assert_eq!(ids(&body), vec!["nobody.png"], "{list_path}creator=");
        let (_, body) = list(&emu, list_path).await;
        assert_eq!(ids(&body).len(), 3, "{list_path} without creator");
    }
    // With a metadata filter too: AND.
    let (_, body) = list(&emu, "/v2?creator=user2&meta.x[eq]=1").await;
    assert_eq!(ids(&body), Vec::<String>::new());
}

#[tokio::test]
async fn flat_variant_and_the_deprecated_v1_direct_upload() {
    let emu = Emu::start().await;
    let (status, body) = list(&emu, "/v1/variants/public/flat").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["id"], "public", "no wrapper: {body}");
    assert!(body["result"]["options"].is_object(), "{body}");
    let (status, body) = list(&emu, "/v1/variants/nosuch/flat").await;
    assert_eq!((status, code(&body)), (404, 5404), "{body}");

    let expiry = (chrono::Utc::now() + chrono::Duration::minutes(10))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, body) = emu
        .send_json(
            reqwest::Method::POST,
            "/v1/direct_upload",
            &json!({"expiry": expiry, "metadata": {"k": "v"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["result"]["id"].as_str().expect("an id").to_owned();
    let url = body["result"]["uploadURL"].as_str().expect("an uploadURL");
    let (_, draft) = list(&emu, &format!("/v1/{id}")).await;
    assert_eq!(draft["result"]["draft"], true, "{draft}");
    assert_eq!(draft["result"]["meta"]["k"], "v", "{draft}");
    let form = Form::new().part("file", file_part(png(1), "d.png"));
    let resp = emu.http.post(url).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (_, done) = list(&emu, &format!("/v1/{id}")).await;
    assert!(done["result"]["draft"].is_null(), "{done}");
    // An expiry outside 2 minutes .. 6 hours is refused, as on v2.
    let (status, body) = emu
        .send_json(
            reqwest::Method::POST,
            "/v1/direct_upload",
            &json!({"expiry": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, 5400), "{body}");
}

#[tokio::test]
async fn bracket_form_metadata_becomes_nested_objects() {
    let emu = Emu::start().await;
    let form = Form::new()
        .part("file", file_part(png(1), "a.png"))
        .text("metadata[a][b]", "c")
        .text("metadata[tags][]", "x")
        .text("metadata[tags][]", "y")
        .text("metadata[flat]", "v");
    let (status, body) = emu.upload(form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["meta"],
        json!({"a": {"b": "c"}, "tags": ["x", "y"], "flat": "v"})
    );
    // And the v2 filters reach into what it built.
    let (_, listed) = list(&emu, "/v2?meta.a.b[eq]=c").await;
    assert_eq!(listed["result"]["images"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn every_api_host_answer_describes_the_rate_limit() {
    let emu = Emu::start_with(|c| {
        c.api_rate_limit = Some(cfimg::emulator::RateLimit {
            requests: 1200,
            window: std::time::Duration::from_secs(300),
            penalty: std::time::Duration::from_secs(300),
        })
    })
    .await;
    emu.upload_png(1, Some("a.png")).await;
    let base = emu.handle.api_base();
    let account = emu.handle.account_id();
    let cases = [
        ("ok", emu.get("/v1/a.png")),
        ("not found", emu.get("/v1/nope.png")),
        ("bad filter", emu.get("/v2?meta.x[like]=1")),
        ("no route in the account", emu.get("/v9/x")),
        (
            "wrong token",
            emu.http.get(emu.url("/v1/stats")).bearer_auth("wrong"),
        ),
        (
            "no token",
            emu.http
                .get(format!("{base}/accounts/{account}/images/v1/stats")),
        ),
        (
            "outside any account",
            emu.http
                .get(format!("{base}/zones/x"))
                .bearer_auth(emu.handle.token()),
        ),
    ];
    for (what, req) in cases {
        let resp = req.send().await.unwrap();
        let h = resp.headers();
        assert!(
            h.get("ratelimit").is_some() && h.get("ratelimit-policy").is_some(),
            "{what} (HTTP {}): headers {h:?}",
            resp.status()
        );
        assert_eq!(h["ratelimit-policy"], "\"burst\";q=1200;w=300", "{what}");
    }
}
