//! `cfimg sign-url URL --expires-in DURATION [--key NAME]`: a delivery URL for a private
//! image, signed as Cloudflare checks it: `exp=<unix seconds>` appended to the query, then
//! `sig` = hex HMAC-SHA256(key, path + "?" + query) appended as `&sig=...`.

use std::sync::atomic::AtomicU32;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{EXIT_OK, api_lane};
use crate::cli::{Cli, SignUrlArgs, parse_duration};
use crate::error::{Error, Result};

/// Signs `url` (path and query, any `exp`/`sig` already there replaced) to expire at `exp`.
pub fn sign(url: &str, key: &[u8], exp: i64) -> Result<String> {
    let mut parsed =
        reqwest::Url::parse(url).map_err(|e| Error::Usage(format!("{url} is not a URL: {e}")))?;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "exp" && k != "sig")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed.set_query(None);
    {
        let mut q = parsed.query_pairs_mut();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair("exp", &exp.to_string());
    }
    let query = parsed.query().unwrap_or_default().to_string();
    let message = format!("{}?{query}", parsed.path());
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .map_err(|e| Error::Usage(format!("unusable signing key: {e}")))?;
    mac.update(message.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    Ok(format!("{parsed}&sig={sig}"))
}

/// Prints the signed URL.
pub async fn run(cli: &Cli, args: &SignUrlArgs) -> Result<i32> {
    let now = chrono::Utc::now().timestamp();
    let exp = match (&args.expires_in, args.expires_at) {
        (_, Some(at)) => at,
        (Some(d), None) => parse_duration(d)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .and_then(|secs| now.checked_add(secs))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--expires-in {d}: give a duration such as 90s, 30m, 12h or 7d"
                ))
            })?,
        (None, None) => return Err(Error::Usage("give --expires-in DURATION".into())),
    };
    if exp <= now {
        eprintln!(
            "cfimg: warning: this URL has expired already (exp {exp} is not after now {now})"
        );
    }
    let (_cfg, lane) = api_lane(cli)?;
    let spent = AtomicU32::new(0);
    let keys = lane.call(&spent, || lane.client.keys()).await?;
    let key = match &args.key {
        Some(name) => keys.keys.iter().find(|k| &k.name == name).ok_or_else(|| {
            let names: Vec<&str> = keys.keys.iter().map(|k| k.name.as_str()).collect();
            Error::Usage(format!(
                "no signing key {name}; the account has: {}",
                names.join(", ")
            ))
        })?,
        None => keys
            .keys
            .iter()
            .find(|k| k.name == "default")
            .or_else(|| keys.keys.first())
            .ok_or_else(|| {
                Error::Usage("the account has no signing key: `cfimg keys add NAME`".into())
            })?,
    };
    println!("{}", sign(&args.url, key.value.as_bytes(), exp)?);
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        // The duration assertions moved to cli::tests::durations_have_one_grammar.
        let signed = sign("https://imagedelivery.net/h/id/public", b"k", 1_700_000_000).unwrap();
        let (unsigned, sig) = signed.split_once("&sig=").unwrap();
        assert_eq!(
            unsigned,
            "https://imagedelivery.net/h/id/public?exp=1700000000"
        );
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").unwrap();
        mac.update(b"/h/id/public?exp=1700000000");
        assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
        // An earlier signature is replaced, not stacked.
        let again = sign(&signed, b"k", 1_700_000_001).unwrap();
        assert_eq!(again.matches("sig=").count(), 1);
    }
}
