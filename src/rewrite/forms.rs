//! The spellings of an old base that `rewrite` looks for: absolute (both schemes),
//! protocol-relative and root-relative, each with plain slashes, JSON-escaped slashes
//! (`https:\/\/`, as `json_encode` writes them) and JSON-escaped slashes inside a
//! mysqldump string (`https:\\/\\/`, as WordPress' JSON post meta appears in a dump).

/// How a slash is written where an old URL was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slash {
    /// `/`.
    Plain,
    /// `\/` (JSON).
    Json,
    /// `\\/` (JSON inside a SQL-escaped string).
    SqlJson,
}

impl Slash {
    /// The bytes that stand for one `/`.
    pub fn token(self) -> &'static [u8] {
        match self {
            Slash::Plain => b"/",
            Slash::Json => b"\\/",
            Slash::SqlJson => b"\\\\/",
        }
    }

    /// `text` with every `/` written this way.
    pub fn encode(self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 16);
        for &b in text.as_bytes() {
            if b == b'/' {
                out.extend_from_slice(self.token());
            } else {
                out.push(b);
            }
        }
        out
    }
}

/// Which part of the old URL a spelling keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `scheme://host/path/` (either scheme: a site served over both).
    Absolute,
    /// `//host/path/`.
    ProtocolRelative,
    /// `/path/`, only when the base has a path longer than `/` (a bare `/` would make every
    /// root-relative link in a file a lookup) and only after a byte that cannot end a host.
    RootRelative,
}

/// One spelling of one old base.
#[derive(Debug, Clone)]
pub struct Spelling {
    /// The bytes searched for.
    pub bytes: Vec<u8>,
    /// Index of the base in [`Bases::bases`].
    pub base: usize,
    /// Which form.
    pub form: Form,
    /// How its slashes are written (the rest of the URL is read, and its replacement
    /// written, the same way).
    pub slash: Slash,
}

/// The old bases, normalised, and every spelling of each.
#[derive(Debug, Clone)]
pub struct Bases {
    /// Each base as `scheme://host[:port]/path/` (ending in `/`).
    pub bases: Vec<String>,
    /// Every spelling, longest-first within a position is left to the matcher.
    pub spellings: Vec<Spelling>,
}

impl Bases {
    /// Parses the bases (absolute http(s) URLs; a missing final `/` is added).
    pub fn new(bases: &[String]) -> Result<Bases, String> {
        let mut out = Bases {
            bases: Vec::new(),
            spellings: Vec::new(),
        };
        for raw in bases {
            let mut b = raw.trim().to_string();
            let rest = b
                .strip_prefix("https://")
                .or_else(|| b.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!(
                        "--old-base {raw}: not an absolute http(s) URL (e.g. https://www.example.com/uploads/)"
                    )
                })?;
            if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
                return Err(format!(
                    "--old-base {raw}: needs a host and no query (e.g. https://www.example.com/uploads/)"
                ));
            }
            if !b.ends_with('/') {
                b.push('/');
            }
            if !out.bases.contains(&b) {
                out.bases.push(b);
            }
        }
        for (i, b) in out.bases.clone().iter().enumerate() {
            let rest = b
                .strip_prefix("https://")
                .or_else(|| b.strip_prefix("http://"))
                .unwrap_or(b);
            let path = rest.find('/').map(|at| &rest[at..]).unwrap_or("/");
            for slash in [Slash::Plain, Slash::Json, Slash::SqlJson] {
                let mut push = |text: String, form| {
                    let bytes = slash.encode(&text);
                    if !out.spellings.iter().any(|s| s.bytes == bytes) {
                        out.spellings.push(Spelling {
                            bytes,
                            base: i,
                            form,
                            slash,
                        });
                    }
                };
                push(format!("https://{rest}"), Form::Absolute);
                push(format!("http://{rest}"), Form::Absolute);
                push(format!("//{rest}"), Form::ProtocolRelative);
                if path != "/" {
                    push(path.to_string(), Form::RootRelative);
                }
            }
        }
        Ok(out)
    }

    /// The other bases with the same path as base `i` (another host serving the same
    /// folder: a root-relative path may be either's).
    pub fn same_path(&self, i: usize) -> impl Iterator<Item = &str> {
        let path = |b: &str| {
            let rest = b.split_once("://").map_or(b, |(_, r)| r);
            rest.find('/').map_or("/", |at| &rest[at..]).to_string()
        };
        let mine = path(&self.bases[i]);
        self.bases
            .iter()
            .enumerate()
            .filter(move |(j, b)| *j != i && path(b) == mine)
            .map(|(_, b)| b.as_str())
    }

    /// The longest spelling, in bytes.
    pub fn longest(&self) -> usize {
        self.spellings
            .iter()
            .map(|s| s.bytes.len())
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_and_slash_of_a_base_is_a_spelling() {
        let b = Bases::new(&["https://www.example.com/uploads".into()]).unwrap();
        assert_eq!(b.bases, ["https://www.example.com/uploads/"]);
        let s: Vec<String> = b
            .spellings
            .iter()
            .map(|s| String::from_utf8(s.bytes.clone()).unwrap())
            .collect();
        for want in [
            "https://www.example.com/uploads/",
            "http://www.example.com/uploads/",
            "//www.example.com/uploads/",
            "/uploads/",
            r"https:\/\/www.example.com\/uploads\/",
            r"\/uploads\/",
            r"https:\\/\\/www.example.com\\/uploads\\/",
        ] {
            assert!(s.contains(&want.to_string()), "{want} in {s:?}");
        }
        // A base at the root has no root-relative spelling.
        let two = Bases::new(&[
            "https://a.example/up/".into(),
            "https://b.example/up/".into(),
            "https://c.example/x/".into(),
        ])
        .unwrap();
        assert_eq!(
            two.same_path(0).collect::<Vec<_>>(),
            ["https://b.example/up/"]
        );
        let root = Bases::new(&["http://old.example/".into()]).unwrap();
        assert!(root.spellings.iter().all(|s| s.form != Form::RootRelative));
        assert!(Bases::new(&["www.example.com/uploads/".into()]).is_err());
    }
}
