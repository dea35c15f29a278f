//! Describing a TOML error in a config file without ever printing the file's text.
//!
//! The toml crate's own `Display` quotes the offending line, and a config file's lines hold
//! the API token, app keys and the webhook secret; `cfimg validate` runs from systemd's
//! `ExecReload`, so that text would land in the journal. Here an error is only ever given as
//! its line and column, the key of that line when it can be told, and the parser's message;
//! the message too is dropped for a line that holds (or may hold) a secret, because serde's
//! messages quote values ("invalid type: integer `123`").

/// Key names whose values are secrets, wherever they appear in a key path.
const SECRET_KEYS: &[&str] = &[
    "api_token",
    "app_keys",
    "webhook_secret",
    "secret_access_key",
    "session_token",
];

/// `line L, column C (key `K`): message`, naming nothing of the file's text but the key.
pub fn describe(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    let Some(span) = err.span() else {
        // No position: the message alone. It names keys, not values, when there is no
        // span (a missing field, a whole-document type error).
        return secret_message(message);
    };
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..line_start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    let table = table_at(&text[..line_start]);
    let where_ = format!("line {line_no}, column {column}");
    // Inside a multi-line string the line is a value, whatever it looks like; inside a
    // multi-line array or inline table (`app_keys = {` ... `}`) it belongs to the key that
    // opened it, whose secrecy decides what is shown.
    let attributed = match open_value(&text[..line_start]) {
        Open::String => None,
        Open::Brackets(opener) => {
            let opener_line = text[opener..].lines().next().unwrap_or_default();
            match attribute(&table_at(&text[..opener]), opener_line) {
                Some(Attributed::Key(key)) => Some(Attributed::Key(key)),
                _ => None,
            }
        }
        Open::Nothing => attribute(&table, line),
    };
    match attributed {
        Some(Attributed::Key(key)) if is_secret(&key) || mentions_secret(line) => format!(
            "{where_} (key `{key}`, a secret: its value is not shown): {}",
            secret_message(message)
        ),
        Some(Attributed::Key(key)) => format!("{where_} (key `{key}`): {message}"),
        Some(Attributed::Table(name)) => format!("{where_} (table `[{name}]`): {message}"),
        // A line that is not `key = value` (a pasted token, the inside of a multi-line
        // value): nothing of it is printed, and the message only if it quotes nothing.
        None => format!("{where_}: {}", secret_message(message)),
    }
}

/// What is still open at the start of a line.
enum Open {
    /// A multi-line string: the line is part of a value.
    String,
    /// A multi-line array or inline table, opened on the line starting at this offset.
    Brackets(usize),
    /// Nothing: the line stands on its own.
    Nothing,
}

/// Scans `before` (whole lines) as TOML's lexer would, minding strings and comments, for a
/// string or bracket left open at its end.
fn open_value(before: &str) -> Open {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Code,
        Comment,
        Basic,
        Literal,
        MultiBasic,
        MultiLiteral,
    }
    let b = before.as_bytes();
    let (mut state, mut depth, mut opener, mut line_start) = (S::Code, 0usize, 0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let triple = |q: u8| b.get(i..i + 3) == Some(&[q, q, q][..]);
        match (state, c) {
            (S::Code, b'#') => state = S::Comment,
            (S::Code, b'"') if triple(b'"') => (state, i) = (S::MultiBasic, i + 2),
            (S::Code, b'"') => state = S::Basic,
            (S::Code, b'\'') if triple(b'\'') => (state, i) = (S::MultiLiteral, i + 2),
            (S::Code, b'\'') => state = S::Literal,
            (S::Code, b'[' | b'{') => {
                if depth == 0 {
                    opener = line_start;
                }
                depth += 1;
            }
            (S::Code, b']' | b'}') => depth = depth.saturating_sub(1),
            // A comment or a single-line string ends with its line (the parser stopped at
            // an unterminated one already).
            (S::Comment | S::Basic | S::Literal, b'\n') => state = S::Code,
            (S::Basic | S::MultiBasic, b'\\') => i += 1,
            (S::Basic, b'"') | (S::Literal, b'\'') => state = S::Code,
            (S::MultiBasic, b'"') if triple(b'"') => (state, i) = (S::Code, i + 2),
            (S::MultiLiteral, b'\'') if triple(b'\'') => (state, i) = (S::Code, i + 2),
            _ => {}
        }
        if b.get(i) == Some(&b'\n') {
            line_start = i + 1;
        }
        i += 1;
    }
    match state {
        S::MultiBasic | S::MultiLiteral => Open::String,
        _ if depth > 0 => Open::Brackets(opener),
        _ => Open::Nothing,
    }
}

/// What a line of the file is about.
enum Attributed {
    /// A `key = value` line, with its full dotted path.
    Key(String),
    /// A `[table]` or `[[array]]` header.
    Table(String),
}

/// The key or table a line belongs to, when it looks like configuration at all. Key names
/// are config names (lowercase letters, digits after the first letter, `_`, `-`); anything
/// else may be a secret pasted on its own line (`dGVzdA==` parses as a key) and is not named.
fn attribute(table: &str, line: &str) -> Option<Attributed> {
    let t = line.trim();
    if let Some(rest) = t.strip_prefix('[') {
        let name = rest.trim_start_matches('[');
        let name = name.split(']').next()?.trim();
        return plausible_path(name).then(|| Attributed::Table(normalize(name)));
    }
    let (key, _) = t.split_once('=')?;
    let key = key.trim();
    if !plausible_path(key) {
        return None;
    }
    let key = normalize(key);
    Some(Attributed::Key(if table.is_empty() {
        key
    } else {
        format!("{table}.{key}")
    }))
}

/// The table in force after `before`: the last `[name]` or `[[name]]` header.
fn table_at(before: &str) -> String {
    before
        .lines()
        .rev()
        .find_map(|l| {
            let t = l.trim();
            let rest = t.strip_prefix('[')?;
            let name = rest.trim_start_matches('[').split(']').next()?.trim();
            Some(if plausible_path(name) {
                normalize(name)
            } else {
                // An unreadable header: treat what follows as possibly secret.
                "app_keys".to_string()
            })
        })
        .unwrap_or_default()
}

/// A dotted key made of config-like names (quotes around a part are allowed).
fn plausible_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 80
        && path.split('.').all(|part| {
            let p = part.trim().trim_matches('"').trim_matches('\'');
            let mut chars = p.chars();
            chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
        })
}

fn normalize(path: &str) -> String {
    path.split('.')
        .map(|p| p.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}

fn is_secret(path: &str) -> bool {
    path.split('.').any(|part| SECRET_KEYS.contains(&part))
}

/// An inline table may hold a secret next to the key the error is about.
fn mentions_secret(line: &str) -> bool {
    SECRET_KEYS.iter().any(|k| line.contains(k))
}

/// The message, unless it is one of serde's that quote the value ("invalid type: integer
/// `123`", "unknown variant `x`"); the parser's own messages are fixed texts.
fn secret_message(message: &str) -> String {
    let quotes_value = [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ]
    .iter()
    .any(|p| message.starts_with(p));
    if quotes_value {
        "the value is not valid here (not shown, as it may be a secret)".to_string()
    } else {
        message.to_string()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
