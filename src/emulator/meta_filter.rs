//! The v2 list's metadata filters, `meta.<field>[<op>]=<value>`, with the 2026 API's
//! operators and limits: at most 5 filters, 5 levels of nesting and 10 `in` values; anything
//! past a limit, an unknown operator or a value its operator cannot take is 400 code 5400
//! naming it. Filters combine with AND; contradictory ones simply match nothing.

use serde_json::{Map, Value};

use super::reply::ApiError;

/// Filters per request.
pub const MAX_FILTERS: usize = 5;
/// Levels of nesting in a filter's field path (`meta.a.b.c.d.e`).
pub const MAX_DEPTH: usize = 5;
/// Values of one `in` filter.
pub const MAX_IN_VALUES: usize = 10;

/// How a filter's value is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Untyped `eq`/`in`: a string, or a number or boolean by its JSON text.
    Any,
    String,
    Number,
    Boolean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
}

/// One parsed filter.
#[derive(Debug)]
pub struct MetaFilter {
    path: Vec<String>,
    op: Op,
    kind: Kind,
    values: Vec<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request(message)
}

impl MetaFilter {
    /// Parses a query key that starts with `meta.` and its value.
    pub fn parse(key: &str, value: &str) -> Result<MetaFilter, ApiError> {
        let rest = &key["meta.".len().min(key.len())..];
        let (path, op_text) = rest
            .strip_suffix(']')
            .and_then(|r| r.split_once('['))
            .filter(|(p, _)| !p.is_empty())
            .ok_or_else(|| {
                bad(format!(
                    "Invalid metadata filter {key:?}: use meta.<field>[<operator>]=<value>"
                ))
            })?;
        let (op, kind) = match op_text {
            "eq" => (Op::Eq, Kind::Any),
            "eq:string" => (Op::Eq, Kind::String),
            "eq:number" => (Op::Eq, Kind::Number),
            "eq:boolean" => (Op::Eq, Kind::Boolean),
            "gt" | "gt:number" => (Op::Gt, Kind::Number),
            "gte" | "gte:number" => (Op::Gte, Kind::Number),
            "lt" | "lt:number" => (Op::Lt, Kind::Number),
            "lte" | "lte:number" => (Op::Lte, Kind::Number),
            "in" => (Op::In, Kind::Any),
            "in:string" => (Op::In, Kind::String),
            "in:number" => (Op::In, Kind::Number),
            other => {
                return Err(bad(format!(
                    "Unsupported metadata filter operator {other:?} in {key:?}: use eq, eq:string, eq:number, eq:boolean, gt, gte, lt, lte, in, in:string or in:number"
                )));
            }
        };
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(bad(format!(
                "Invalid metadata filter {key:?}: empty field name"
            )));
        }
        if path.len() > MAX_DEPTH {
            return Err(bad(format!(
                "Metadata filter nesting too deep in {key:?}: {} levels provided, maximum {MAX_DEPTH} allowed",
                path.len()
            )));
        }
        let values: Vec<String> = if op == Op::In {
            value.split('|').map(str::to_owned).collect()
        } else {
            vec![value.to_owned()]
        };
        if values.len() > MAX_IN_VALUES {
            return Err(bad(format!(
                "Too many values in metadata filter {key:?}: {} provided, maximum {MAX_IN_VALUES} allowed",
                values.len()
            )));
        }
        for v in &values {
            let fits = match kind {
                Kind::Number => v.trim().parse::<f64>().is_ok_and(f64::is_finite),
                Kind::Boolean => matches!(v.as_str(), "true" | "false"),
                Kind::Any | Kind::String => true,
            };
            if !fits {
                let wanted = if kind == Kind::Boolean {
                    "true or false"
                } else {
                    "a number"
                };
                return Err(bad(format!(
                    "Invalid value {v:?} for metadata filter {key:?}: {op_text} takes {wanted}"
                )));
            }
        }
        Ok(MetaFilter {
            path,
            op,
            kind,
            values,
        })
    }

    /// Parses every filter of a request, enforcing the count limit.
    pub fn parse_all(pairs: &[(String, String)]) -> Result<Vec<MetaFilter>, ApiError> {
        let filters = pairs
            .iter()
            .map(|(k, v)| MetaFilter::parse(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        if filters.len() > MAX_FILTERS {
            return Err(bad(format!(
                "Too many metadata filters: {} provided, maximum {MAX_FILTERS} allowed",
                filters.len()
            )));
        }
        Ok(filters)
    }

    /// Whether an image's metadata passes; a missing field, null, an object or an array
    /// never does.
    pub fn matches(&self, meta: &Map<String, Value>) -> bool {
        let mut current: Option<&Value> = None;
        for (i, key) in self.path.iter().enumerate() {
            current = if i == 0 {
                meta.get(key)
            } else {
                current.and_then(|v| v.get(key))
            };
        }
        let Some(field) = current else { return false };
        match self.op {
            Op::Eq | Op::In => self.values.iter().any(|v| equal(field, self.kind, v)),
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                let (Some(have), Some(want)) = (
                    field.as_f64(),
                    self.values
                        .first()
                        .and_then(|v| v.trim().parse::<f64>().ok()),
                ) else {
                    return false;
                };
                match self.op {
                    Op::Gt => have > want,
                    Op::Gte => have >= want,
                    Op::Lt => have < want,
                    _ => have <= want,
                }
            }
        }
    }
}

fn equal(field: &Value, kind: Kind, want: &str) -> bool {
    match (kind, field) {
        (Kind::Any | Kind::String, Value::String(s)) => s == want,
        (Kind::Any, Value::Number(n)) => {
            n.to_string() == want || want.trim().parse::<f64>().ok() == n.as_f64()
        }
        (Kind::Any | Kind::Boolean, Value::Bool(b)) => b.to_string() == want,
        (Kind::Number, Value::Number(n)) => want.trim().parse::<f64>().ok() == n.as_f64(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn operators_match_as_documented() {
        let m =
            meta(json!({"status": "active", "priority": 5, "ok": true, "region": {"name": "eu"}}));
        let t = |k: &str, v: &str| MetaFilter::parse(k, v).map(|f| f.matches(&m));
        assert!(t("meta.status[eq]", "active").unwrap());
        assert!(t("meta.status[eq:string]", "active").unwrap());
        assert!(!t("meta.priority[eq:string]", "5").unwrap());
        assert!(t("meta.priority[eq:number]", "5.0").unwrap());
        assert!(t("meta.ok[eq:boolean]", "true").unwrap());
        assert!(t("meta.priority[gt]", "4").unwrap());
        assert!(!t("meta.priority[gt:number]", "5").unwrap());
        assert!(t("meta.priority[gte]", "5").unwrap());
        assert!(t("meta.priority[lt]", "6").unwrap());
        assert!(t("meta.priority[lte:number]", "5").unwrap());
        assert!(t("meta.status[in]", "pending|active").unwrap());
        assert!(t("meta.priority[in:number]", "4|5").unwrap());
        assert!(t("meta.region.name[eq]", "eu").unwrap());
        assert!(t("meta.priority[gt]", "x").is_err());
        assert!(t("meta.status[like]", "a").is_err());
        assert!(t("meta.a.b.c.d.e.f[eq]", "a").is_err());
        assert!(t("meta.a.b.c.d.e[eq]", "a").is_ok());
        assert!(t("meta.s[in]", "1|2|3|4|5|6|7|8|9|10|11").is_err());
    }
}
