//! One dynamic Cloudflare Single Redirect rule per old base path, when every item's image
//! id is its path with one prefix (`--id-mode path`): then the delivery URL is a function
//! of the old path, and `wildcard_replace()` (all plans; no regular expression needed)
//! covers every item however many there are. The prepass checks that every uploaded item
//! fits; the first that does not is named, with the formats that list items one by one.
//!
//! Written as the JSON of the rules for the `http_request_dynamic_redirect` phase.

use super::quoted as literal;
use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;

use super::{Entry, Format, KeyFn, Keyed};
use crate::error::{Error, Result};
use crate::item::SourceKind;

/// The single-rule writer.
#[derive(Debug)]
pub struct Rule {
    status: u16,
    /// (delivery URL before the key, id prefix, variant) that every item shares.
    shape: Option<(String, String, String)>,
    /// Old base path -> hosts that serve it.
    paths: BTreeMap<String, Vec<String>>,
}

impl Rule {
    /// A writer of a rule with this status.
    pub fn new(status: u16) -> Rule {
        Rule {
            status,
            shape: None,
            paths: BTreeMap::new(),
        }
    }
}

fn key(e: &Entry<'_>) -> Keyed {
    if e.has_query {
        return Err("has a query string (the rule matches the path only)");
    }
    Ok(format!("{}{}", e.host, e.path))
}

/// A wildcard pattern matching `s` literally (`*` and `\` escaped).
fn wildcard_literal(s: &str) -> String {
    s.replace('\\', "\\\\").replace('*', "\\*")
}

fn not_one_rule(e: &Entry<'_>, why: &str) -> Error {
    Error::Usage(format!(
        "--format cloudflare-rule needs every uploaded item's image id to be its path with one prefix \
         (--id-mode path), but {} of {} {why}: use --format cloudflare-bulk, nginx, apache, caddy, netlify or json, \
         which list the items one by one",
        e.mapped.key, e.mapped.source
    ))
}

impl Format for Rule {
    fn needs_prepass(&self) -> bool {
        true
    }

    fn keyer(&self) -> KeyFn {
        key
    }

    fn prepare(&mut self, e: &Entry<'_>, _key: &str) -> Result<()> {
        if !matches!(e.kind, SourceKind::Dir | SourceKind::Bucket) {
            return Err(not_one_rule(
                e,
                "comes from a manifest (its old URL is not a base plus its key)",
            ));
        }
        let id = &e.mapped.image_id;
        let key = &e.mapped.key;
        let Some(prefix) = id.strip_suffix(key.as_str()) else {
            return Err(not_one_rule(e, &format!("has the image id {id:?}")));
        };
        let Some((before_variant, variant)) = e.mapped.delivery_url.rsplit_once('/') else {
            return Err(not_one_rule(e, "has no delivery URL"));
        };
        // The delivery URL holds the key percent-encoded (as the old path does) or as is.
        let encoded_key = crate::old_url::encode_key(key.trim_start_matches('/'));
        let Some(head) = before_variant
            .strip_suffix(encoded_key.as_str())
            .or_else(|| before_variant.strip_suffix(key.as_str()))
        else {
            return Err(not_one_rule(
                e,
                "has a delivery URL that does not end in its key",
            ));
        };
        let shape = (head.to_string(), prefix.to_string(), variant.to_string());
        match &self.shape {
            None => self.shape = Some(shape),
            Some(s) if *s == shape => {}
            Some(s) => {
                return Err(not_one_rule(
                    e,
                    &format!(
                        "is delivered under {:?} (id prefix {:?}), others under {:?} (id prefix {:?})",
                        shape.0, shape.1, s.0, s.1
                    ),
                ));
            }
        }
        // The old base path is the old path minus the key, as encoded in it.
        let Some(base_path) = e.path.strip_suffix(encoded_key.as_str()) else {
            return Err(not_one_rule(
                e,
                "has an old URL that does not end in its key",
            ));
        };
        let hosts = self.paths.entry(base_path.to_string()).or_default();
        if !hosts.iter().any(|h| h == e.host) {
            hosts.push(e.host.to_string());
        }
        Ok(())
    }

    fn begin(&mut self, _out: &mut dyn Write) -> std::io::Result<()> {
        Ok(())
    }

    fn entry(&mut self, _out: &mut dyn Write, _e: &Entry<'_>, _key: &str) -> std::io::Result<()> {
        Ok(())
    }

    fn end(&mut self, out: &mut dyn Write) -> Result<()> {
        let Some((head, _, variant)) = &self.shape else {
            return Err(Error::Usage(
                "no uploaded item has an old URL: nothing for a rule to redirect (give --old-base URL)".into(),
            ));
        };
        let mut rules = Vec::new();
        for (path, hosts) in &self.paths {
            let host_test = match hosts.as_slice() {
                [one] => format!("http.host eq {}", literal(one)),
                many => format!(
                    "http.host in {{{}}}",
                    many.iter()
                        .map(|h| literal(h))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            };
            let expression = format!(
                "({host_test} and starts_with(http.request.uri.path, {}))",
                literal(path)
            );
            let replacement = format!(
                "{}${{1}}/{}",
                head.replace('$', "$$"),
                variant.replace('$', "$$")
            );
            let target = format!(
                "wildcard_replace(http.request.uri.path, {}, {}, \"s\")",
                literal(&format!("{}*", wildcard_literal(path))),
                literal(&replacement)
            );
            rules.push(json!({
                "description": format!("cfimg: old image URLs under {} to Cloudflare Images", hosts.iter().map(|h| format!("{h}{path}")).collect::<Vec<_>>().join(", ")),
                "expression": expression,
                "action": "redirect",
                "action_parameters": {"from_value": {
                    "status_code": self.status,
                    "target_url": {"expression": target},
                    "preserve_query_string": false
                }}
            }));
        }
        let doc = json!({ "rules": rules });
        serde_json::to_writer_pretty(&mut *out, &doc)
            .map_err(|e| super::write_err(std::io::Error::other(e)))?;
        writeln!(out).map_err(super::write_err)
    }

    fn notes(&self, _rules: u64) -> Vec<String> {
        vec![format!(
            "cloudflare-rule: {} covering every item: the body of PUT /zones/ZONE_ID/rulesets/phases/http_request_dynamic_redirect/entrypoint (or paste each expression in the dashboard); items not uploaded are sent to an image that does not exist (404)",
            crate::progress::plural(self.paths.len() as u64, "rule", "rules")
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_wildcards_are_escaped() {
        assert_eq!(literal(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(wildcard_literal(r"/up*\x/"), r"/up\*\\x/");
    }
}
