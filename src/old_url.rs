//! Where each item used to live, and back: the old public bases of the sources
//! ([`OldBases`]), an item's old URLs ([`old_urls`]) and an old URL's item ([`Resolver`]).
//! Shared by `cfimg redirects` (item -> old URL) and `cfimg rewrite` (old URL -> item).
//!
//! A folder or bucket item used to be served at a base plus its key, each path segment
//! percent-encoded as a browser requests it; a manifest item's old URL is its URL (the
//! key). Several bases may serve the same source (two hosts).

use std::collections::HashMap;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::error::{Error, Result};
use crate::item::SourceKind;
use crate::ledger::{Ledger, Row, State};

/// Bytes a path segment keeps as they are: RFC 3986 unreserved and the sub-delimiters,
/// `:` and `@` (`pchar`). Everything else (space, `%`, `?`, `#`, quotes, non-ASCII, ...)
/// is percent-encoded as UTF-8, the way a browser sends it and a web server decodes it.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// One old public base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldBase {
    /// Absolute http(s) URL ending in '/', scheme and host in lower case.
    pub url: String,
    /// The source it serves; `None` (given by `--old-base`): every folder and bucket source.
    pub source_id: Option<i64>,
}

/// The old public bases: those given on the command line and those stored per source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OldBases {
    bases: Vec<OldBase>,
}

/// `s` as an old base: an absolute http(s) URL with a host and no query or fragment,
/// ending in '/' (added when missing). The error names the value and the fix.
pub fn parse_base(s: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "--old-base {s:?} {why}: give the absolute URL the files were served under, e.g. https://www.example.com/uploads/"
        ))
    };
    let url = reqwest::Url::parse(s.trim()).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a query or a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("holds credentials"));
    }
    let mut out = url.to_string();
    if !out.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

impl OldBases {
    /// The bases given as `--old-base` flags (they serve every folder and bucket source).
    pub fn from_flags(flags: &[String]) -> Result<OldBases> {
        let mut out = OldBases::default();
        for f in flags {
            out.push(OldBase {
                url: parse_base(f)?,
                source_id: None,
            });
        }
        Ok(out)
    }

    /// Adds the bases stored in the ledger (`cfimg source set-old-base`), of one source or
    /// of every source.
    pub fn with_stored(mut self, ledger: &Ledger, source: Option<i64>) -> Result<OldBases> {
        for (source_id, url) in ledger.old_bases()? {
            if source.is_none_or(|s| s == source_id) {
                self.push(OldBase {
                    url,
                    source_id: Some(source_id),
                });
            }
        }
        Ok(self)
    }

    /// Adds one base, unless it is already there.
    pub fn push(&mut self, base: OldBase) {
        if !self.bases.contains(&base) {
            self.bases.push(base);
        }
    }

    /// No base at all.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// Every base.
    pub fn all(&self) -> &[OldBase] {
        &self.bases
    }

    /// The bases that serve one source (stored for it or given as flags), each once.
    pub fn for_source(&self, source_id: i64) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for b in &self.bases {
            if b.source_id.is_none_or(|s| s == source_id) && !out.contains(&b.url.as_str()) {
                out.push(&b.url);
            }
        }
        out
    }
}

/// A key as the path a web server served it under: each '/'-separated segment
/// percent-encoded (see [`SEGMENT`]), the separators kept.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for (i, seg) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(seg, SEGMENT));
    }
    out
}

/// The old URLs of one item: for a folder or bucket source, each base that serves it plus
/// its encoded key; for a manifest, the URL it was fetched from; none for other kinds.
pub fn old_urls(bases: &OldBases, source_id: i64, kind: SourceKind, key: &str) -> Vec<String> {
    match kind {
        SourceKind::Dir | SourceKind::Bucket => {
            let path = encode_key(key.trim_start_matches('/'));
            bases
                .for_source(source_id)
                .into_iter()
                .map(|b| format!("{b}{path}"))
                .collect()
        }
        SourceKind::Manifest => vec![key.to_string()],
        SourceKind::Drafts => Vec::new(),
    }
}

/// The recorded delivery URL with its last segment (the variant) set to `variant`
/// (`None`: as recorded, the `public` variant when there is one).
pub fn delivery_url(recorded: &str, variant: Option<&str>) -> String {
    match (variant, recorded.rsplit_once('/')) {
        (Some(v), Some((base, _))) => format!("{base}/{v}"),
        _ => recorded.to_string(),
    }
}

/// An old URL's item, uploaded, with where it is delivered now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The source's number in the ledger.
    pub source_id: i64,
    /// The source, as `kind:location`.
    pub source: String,
    /// The item's key within its source.
    pub key: String,
    /// The image that holds it.
    pub image_id: String,
    /// Its delivery URL, with the caller's variant (as `cfimg export` writes it otherwise).
    pub delivery_url: String,
}

impl Mapped {
    /// The mapping of an uploaded row that has an image and a delivery URL; `None` for any
    /// other row (not uploaded: no rule for it).
    pub fn of(row: &Row, variant: Option<&str>) -> Option<Mapped> {
        match (row.state, &row.image_id, &row.url) {
            (State::Uploaded, Some(id), Some(url)) => Some(Mapped {
                source_id: row.source_id,
                source: row.source.clone(),
                key: row.key.clone(),
                image_id: id.clone(),
                delivery_url: delivery_url(url, variant),
            }),
            _ => None,
        }
    }
}

/// The URL without its scheme (`//host/path...`), host in lower case, and whether it had
/// one; `None` when it is neither absolute http(s) nor protocol-relative.
fn schemeless(url: &str) -> Option<String> {
    let rest = if let Some(r) = url.strip_prefix("//") {
        r
    } else {
        let (scheme, r) = url.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        r
    };
    let (host, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = host.to_ascii_lowercase();
    let host = host
        .strip_suffix(":80")
        .or_else(|| host.strip_suffix(":443"))
        .unwrap_or(&host);
    Some(format!("//{host}{path}"))
}

/// Looks old URLs up in the ledger: one indexed query per candidate source, nothing of the
/// ledger held in memory beyond the list of sources.
#[derive(Debug)]
pub struct Resolver<'a> {
    ledger: &'a Ledger,
    /// (base without its scheme, the sources it serves), longest base first.
    bases: Vec<(String, Vec<i64>)>,
    manifests: Vec<i64>,
    kinds: HashMap<i64, SourceKind>,
    variant: Option<String>,
}

impl<'a> Resolver<'a> {
    /// A resolver over `ledger` for these bases; delivery URLs get `variant` (`None`: as
    /// recorded).
    pub fn new(ledger: &'a Ledger, bases: &OldBases, variant: Option<&str>) -> Result<Self> {
        let mut kinds = HashMap::new();
        let mut manifests = Vec::new();
        let mut files = Vec::new();
        for (id, kind, _) in ledger.sources()? {
            let Some(kind) = SourceKind::parse(&kind) else {
                continue;
            };
            kinds.insert(id, kind);
            match kind {
                SourceKind::Manifest => manifests.push(id),
                SourceKind::Dir | SourceKind::Bucket => files.push(id),
                SourceKind::Drafts => {}
            }
        }
        let mut by_base: Vec<(String, Vec<i64>)> = Vec::new();
        for b in bases.all() {
            let Some(key) = schemeless(&b.url) else {
                continue;
            };
            let serves: Vec<i64> = match b.source_id {
                Some(s) if files.contains(&s) => vec![s],
                Some(_) => Vec::new(),
                None => files.clone(),
            };
            match by_base.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ids)) => {
                    for s in serves {
                        if !ids.contains(&s) {
                            ids.push(s);
                        }
                    }
                }
                None => by_base.push((key, serves)),
            }
        }
        by_base.sort_by_key(|b| std::cmp::Reverse(b.0.len()));
        Ok(Resolver {
            ledger,
            bases: by_base,
            manifests,
            kinds,
            variant: variant.map(str::to_string),
        })
    }

    /// The uploaded item an old URL stands for: absolute (`http`/`https`, either scheme
    /// matches a base) or protocol-relative (`//host/...`). A manifest item matches on its
    /// exact URL; a folder or bucket item on a base plus its key, percent-decoded, query
    /// and fragment ignored (a static file server ignores them too). `None` when no
    /// uploaded item has that old URL.
    pub fn resolve(&self, url: &str) -> Result<Option<Mapped>> {
        let variant = self.variant.as_deref();
        let absolute: Vec<String> = match url.strip_prefix("//") {
            Some(_) => vec![format!("https:{url}"), format!("http:{url}")],
            None => vec![url.to_string()],
        };
        for source_id in &self.manifests {
            for u in &absolute {
                if let Some(m) = self
                    .ledger
                    .lookup(*source_id, u)?
                    .and_then(|r| Mapped::of(&r, variant))
                {
                    return Ok(Some(m));
                }
            }
        }
        let Some(bare) = schemeless(url) else {
            return Ok(None);
        };
        let path_end = bare.find(['?', '#']).unwrap_or(bare.len());
        let bare = &bare[..path_end];
        for (base, sources) in &self.bases {
            let Some(rest) = bare.strip_prefix(base.as_str()) else {
                continue;
            };
            let Ok(key) = percent_decode_str(rest).decode_utf8() else {
                continue;
            };
            if key.is_empty() {
                continue;
            }
            for source_id in sources {
                if let Some(m) = self
                    .ledger
                    .lookup(*source_id, &key)?
                    .and_then(|r| Mapped::of(&r, variant))
                {
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    }

    /// The kind of a source of this ledger.
    pub fn kind(&self, source_id: i64) -> Option<SourceKind> {
        self.kinds.get(&source_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_validated_and_end_in_a_slash() {
        assert_eq!(
            parse_base("https://WWW.Example.com/uploads").unwrap(),
            "https://www.example.com/uploads/"
        );
        assert_eq!(
            parse_base("http://cdn.example.com").unwrap(),
            "http://cdn.example.com/"
        );
        for bad in [
            "ftp://x/",
            "/uploads/",
            "https://x/?a=1",
            "https://u:p@x/",
            "nope",
        ] {
            let e = parse_base(bad).unwrap_err().to_string();
            assert!(e.contains("--old-base"), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_are_encoded_per_segment_as_a_browser_requests_them() {
        assert_eq!(encode_key("2019/cat.jpg"), "2019/cat.jpg");
        assert_eq!(encode_key("a b/100%.png"), "a%20b/100%25.png");
        assert_eq!(encode_key("café/ü?#.jpg"), "caf%C3%A9/%C3%BC%3F%23.jpg");
        assert_eq!(
            encode_key("keep(1)+!$&',;=:@~.jpg"),
            "keep(1)+!$&',;=:@~.jpg"
        );
    }

    #[test]
    fn old_urls_per_kind_and_base() {
        let mut bases = OldBases::from_flags(&["https://a.example/up".into()]).unwrap();
        bases.push(OldBase {
            url: "https://b.example/".into(),
            source_id: Some(2),
        });
        assert_eq!(
            old_urls(&bases, 1, SourceKind::Dir, "x y.jpg"),
            vec!["https://a.example/up/x%20y.jpg"]
        );
        assert_eq!(
            old_urls(&bases, 2, SourceKind::Bucket, "k.png"),
            vec!["https://a.example/up/k.png", "https://b.example/k.png"]
        );
        assert_eq!(
            old_urls(
                &bases,
                3,
                SourceKind::Manifest,
                "https://m.example/a.jpg?x=1"
            ),
            vec!["https://m.example/a.jpg?x=1"]
        );
        assert!(old_urls(&bases, 4, SourceKind::Drafts, "id").is_empty());
    }

    #[test]
    fn delivery_url_takes_the_callers_variant() {
        let u = "https://imagedelivery.net/h/id/public";
        assert_eq!(delivery_url(u, None), u);
        assert_eq!(
            delivery_url(u, Some("thumb")),
            "https://imagedelivery.net/h/id/thumb"
        );
    }

    #[test]
    fn schemeless_form_lowercases_the_host_and_drops_default_ports() {
        assert_eq!(
            schemeless("HTTPS://WWW.Ex.com:443/A%20b?q").as_deref(),
            Some("//www.ex.com/A%20b?q")
        );
        assert_eq!(schemeless("//x.com/a").as_deref(), Some("//x.com/a"));
        assert_eq!(schemeless("/root/relative"), None);
        assert_eq!(schemeless("data:abc"), None);
    }

    fn version(source_id: i64, key: &str) -> crate::ledger::Version {
        crate::ledger::Version {
            source_id,
            key: key.into(),
            size: 1,
            mtime_ns: 1,
            etag: None,
            options: None,
            sha256: Some("s".into()),
            ticket: Default::default(),
        }
    }

    fn uploaded(source_id: i64, key: &str, id: &str) -> crate::ledger::Record {
        crate::ledger::Record::Uploaded {
            version: version(source_id, key),
            image_id: id.into(),
            url: Some(format!("https://imagedelivery.net/h/{id}/public")),
            attempts: 1,
            replaced: false,
            stamp: None,
            check_after: None,
            superseded: None,
        }
    }

    #[tokio::test]
    async fn old_urls_resolve_to_their_uploaded_items_only() {
        use crate::item::SourceId;
        use crate::ledger::{Failure, LedgerWriter, Record};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        let (writer, thread) = LedgerWriter::spawn(&path).unwrap();
        let d = writer
            .source(&SourceId::new(SourceKind::Dir, "/site/uploads"))
            .await
            .unwrap();
        let m = writer
            .source(&SourceId::new(SourceKind::Manifest, "/m.csv"))
            .await
            .unwrap();
        for r in [
            uploaded(d, "2019/cat.jpg", "i1"),
            uploaded(d, "a b/100% ü.png", "i2"),
            uploaded(m, "https://old.example/x.jpg?v=2", "i3"),
            Record::Failed {
                version: version(d, "bad.jpg"),
                reason: "no".into(),
                attempts: 1,
                failure: Failure::Rejected,
                image_gone: false,
                check_after: None,
            },
        ] {
            writer.commit(r).await.unwrap();
        }
        drop(writer);
        thread.join().unwrap().unwrap();

        let mut ledger = Ledger::open(&path).unwrap();
        ledger
            .set_old_bases(d, &["https://cdn.example/u/".into()])
            .unwrap();
        let bases = OldBases::from_flags(&["https://www.example.com/uploads/".into()])
            .unwrap()
            .with_stored(&ledger, None)
            .unwrap();
        assert_eq!(bases.for_source(d).len(), 2);
        let r = Resolver::new(&ledger, &bases, Some("thumb")).unwrap();
        let hit = |u: &str| r.resolve(u).unwrap().map(|m| m.image_id);
        assert_eq!(
            hit("https://www.example.com/uploads/2019/cat.jpg").as_deref(),
            Some("i1")
        );
        assert_eq!(
            hit("http://WWW.EXAMPLE.COM/uploads/2019/cat.jpg?x#y").as_deref(),
            Some("i1")
        );
        assert_eq!(hit("//cdn.example/u/2019/cat.jpg").as_deref(), Some("i1"));
        // Every old URL this module writes resolves back to its item.
        for u in old_urls(&bases, d, SourceKind::Dir, "a b/100% ü.png") {
            assert_eq!(hit(&u).as_deref(), Some("i2"), "{u}");
        }
        assert_eq!(hit("https://old.example/x.jpg?v=2").as_deref(), Some("i3"));
        assert_eq!(hit("//old.example/x.jpg?v=2").as_deref(), Some("i3"));
        assert_eq!(hit("https://old.example/x.jpg"), None);
        assert_eq!(hit("https://www.example.com/uploads/bad.jpg"), None);
        assert_eq!(hit("https://www.example.com/uploads/missing.jpg"), None);
        assert_eq!(hit("https://elsewhere.example/2019/cat.jpg"), None);
        let m1 = r
            .resolve("https://cdn.example/u/2019/cat.jpg")
            .unwrap()
            .unwrap();
        assert_eq!(m1.delivery_url, "https://imagedelivery.net/h/i1/thumb");
        assert_eq!(m1.key, "2019/cat.jpg");
        assert_eq!(m1.source, "dir:/site/uploads");

        // Stored bases are replaced as a set, and survive a reopen.
        ledger.set_old_bases(d, &[]).unwrap();
        assert!(ledger.old_bases().unwrap().is_empty());
    }
}
