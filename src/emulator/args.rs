//! The `cfimg emulator` command line and its foreground run.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    DEFAULT_ACCOUNT_ID, DEFAULT_API_TOKEN, EmulatorConfig, Faults, LimitWindow, RateLimit, start,
};

/// Flags of `cfimg emulator`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Account id (at most 32 characters).
    #[arg(long = "account", default_value = DEFAULT_ACCOUNT_ID)]
    pub account: String,
    /// API token clients must send.
    #[arg(long, default_value = DEFAULT_API_TOKEN)]
    pub token: String,
    /// Keep state in this directory across restarts (default: memory only).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// API-host limit per token: N/WINDOW (e.g. 1200/300s, 50/1s) or off.
    #[arg(long, default_value = "1200/300s", value_parser = parse_rate_limit_arg)]
    pub rate_limit: LimitArg,
    /// Batch-host limit per batch token: N/WINDOW or off.
    #[arg(long, default_value = "200/1s", value_parser = parse_rate_limit_arg)]
    pub batch_rate_limit: LimitArg,
    /// How the batch host counts its limit: `bucket` refills continuously and blocks for
    /// the penalty once dry; `sliding` admits at most N in any WINDOW (no penalty), the
    /// server the `Ratelimit` headers describe (policy `"default"`, whole-second `t`).
    #[arg(long, value_enum, value_name = "KIND", default_value = "bucket")]
    pub batch_window: LimitWindow,
    /// Leave `Ratelimit` and `Ratelimit-Policy` off the batch host's answers (its 429s
    /// keep `retry-after`), as a server that does not send them.
    #[arg(long)]
    pub no_batch_ratelimit_headers: bool,
    /// Seconds a token stays blocked once over a bucket limit (default: the limit's window).
    #[arg(long)]
    pub penalty: Option<u64>,
    /// Lifetime of batch tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub batch_token_ttl: u64,
    /// Seconds a new image stays out of lists (eventual consistency); GET finds it at once.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_secs)]
    pub list_lag: f64,
    /// Images the account may hold: `stats` reports it, and uploads past it answer 5453.
    #[arg(long, default_value_t = super::DEFAULT_MAX_IMAGES)]
    pub max_images: u64,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 0)]
    pub fault_seed: u64,
    /// Probability of a 500.
    #[arg(long, default_value_t = 0.0)]
    pub fault_500: f64,
    /// Probability of a 502.
    #[arg(long, default_value_t = 0.0)]
    pub fault_502: f64,
    /// Probability of a 503.
    #[arg(long, default_value_t = 0.0)]
    pub fault_503: f64,
    /// Probability that an upload's connection is dropped before the image is stored.
    #[arg(long, default_value_t = 0.0)]
    pub fault_drop_before: f64,
    /// Probability that an upload's connection is dropped after the image is stored.
    #[arg(long, default_value_t = 0.0)]
    pub fault_drop_after: f64,
    /// Probability that an upload is stored and then answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub fault_store_then_500: f64,
    /// Added latency, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// Probability of the added latency.
    #[arg(long, default_value_t = 0.0)]
    pub fault_latency_p: f64,
    /// Probability of a 429 that is the edge's HTML page (Error 1015), limiter untouched.
    #[arg(long, default_value_t = 0.0)]
    pub fault_429_html: f64,
    /// Answer the rate limiter's 429s with the edge's HTML page instead of JSON.
    #[arg(long)]
    pub edge_429: bool,
    /// Send Retry-After with the edge's HTML 429s.
    #[arg(long)]
    pub edge_429_retry_after: bool,
    /// Send a notification per completed or failed direct upload to this URL.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    /// The secret sent in `cf-webhook-auth` with each notification.
    #[arg(
        long,
        value_name = "SECRET",
        env = "CFIMG_EMULATOR_WEBHOOK_SECRET",
        hide_env_values = true,
        value_parser = secret_arg
    )]
    pub webhook_secret: Option<crate::secret::Secret>,
    /// A token that may read but not change anything (403 code 9109); repeatable.
    #[arg(long = "read-only-token", value_name = "TOKEN")]
    pub read_only_tokens: Vec<String>,
    /// `--reencode-originals-above`, `--alter-original` (`originals.rs`).
    #[command(flatten)]
    pub originals: super::OriginalsArgs,
    /// Refuse list `per_page` above N with 400 code 5400 (the 2026 description says "up to
    /// 1000 results per page"; the schema allows 10000).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_per_page: u32,
    /// A PATCH changing requireSignedURLs gives the image a new id ("Returns a new UID on
    /// a change"), as the API allows.
    #[arg(long)]
    pub new_id_on_signed_change: bool,
    /// The account is not Enterprise: AVIF uploads are refused ("AVIF input is not enabled
    /// for this account").
    #[arg(long)]
    pub no_avif_input: bool,
}

/// A parsed `--rate-limit` value. A newtype, because clap treats a field of type
/// `Option<T>` as an optional `T` and would not accept a parser returning an `Option`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitArg(pub Option<(u32, Duration)>);

fn parse_rate_limit_arg(text: &str) -> Result<LimitArg, String> {
    parse_rate_limit(text).map(LimitArg)
}

/// A secret flag, held redacted from the moment it is parsed.
fn secret_arg(text: &str) -> Result<crate::secret::Secret, String> {
    Ok(crate::secret::Secret::new(text))
}

/// A non-negative number of seconds (fractions allowed).
fn parse_secs(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() && s < 1e9 => Ok(s),
        _ => Err(format!("expected a number of seconds, got {text:?}")),
    }
}

/// Parses `N/WINDOW` (window in `ms`, `s`, `m` or `h`; bare numbers are seconds) or `off`.
pub fn parse_rate_limit(text: &str) -> Result<Option<(u32, Duration)>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (n, window) = text
        .split_once('/')
        .ok_or_else(|| format!("expected N/WINDOW or off, got {text:?}"))?;
    let n: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid request count {n:?}"))?;
    let window = window.trim();
    let split = window
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(window.len());
    let (num, unit) = window.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("invalid window {window:?}"))?;
    let secs = match unit {
        "" | "s" => num,
        "ms" => num / 1000.0,
        "m" => num * 60.0,
        "h" => num * 3600.0,
        _ => return Err(format!("invalid window unit {unit:?}: use ms, s, m or h")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("the window must be positive, got {window:?}"));
    }
    Ok(Some((n, Duration::from_secs_f64(secs))))
}

impl EmulatorArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> EmulatorConfig {
        let limit = |l: Option<(u32, Duration)>| {
            l.map(|(requests, window)| RateLimit {
                requests,
                window,
                penalty: self.penalty.map_or(window, Duration::from_secs),
            })
        };
        EmulatorConfig {
            account_id: self.account.clone(),
            api_token: self.token.clone(),
            data_dir: self.data.clone(),
            api_rate_limit: limit(self.rate_limit.0),
            batch_rate_limit: limit(self.batch_rate_limit.0),
            batch_window: self.batch_window,
            batch_ratelimit_headers: !self.no_batch_ratelimit_headers,
            faults: Faults {
                seed: self.fault_seed,
                p_500: self.fault_500,
                p_502: self.fault_502,
                p_503: self.fault_503,
                p_drop_before_store: self.fault_drop_before,
                p_drop_after_store: self.fault_drop_after,
                p_store_then_500: self.fault_store_then_500,
                p_latency: self.fault_latency_p,
                latency_ms: self.fault_latency_ms,
                p_429_html: self.fault_429_html,
                edge_429: self.edge_429,
                edge_429_retry_after: self.edge_429_retry_after,
            },
            read_only_tokens: self.read_only_tokens.clone(),
            batch_token_ttl: Duration::from_secs(self.batch_token_ttl),
            list_lag: Duration::from_secs_f64(self.list_lag),
            max_images: self.max_images,
            originals: self.originals.clone(),
            switches: super::Switches {
                max_per_page: self.max_per_page,
                new_id_on_signed_change: self.new_id_on_signed_change,
                avif_input: !self.no_avif_input,
            },
            webhook: self
                .webhook_url
                .clone()
                .map(|url| super::WebhookDestination {
                    url,
                    secret: self.webhook_secret.as_ref().map(|s| s.expose().to_string()),
                }),
        }
    }
}

/// Runs the emulator in the foreground: prints the base URLs, serves until SIGINT/SIGTERM.
pub async fn run(args: EmulatorArgs) -> std::io::Result<()> {
    if args.account.is_empty() || args.account.len() > 32 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the account id must be 1 to 32 characters",
        ));
    }
    let handle = start(args.listen, args.config()).await?;
    {
        let mut out = std::io::stdout().lock();
        out.write_all(settings(&handle).as_bytes())?;
        out.flush()?;
    }
    wait_for_signal().await?;
    handle.shutdown().await;
    Ok(())
}

/// What the emulator prints at start: shell `export` lines of the variables every cfimg
/// command reads, so that `eval` (or `.` on a saved copy) points a shell at it.
pub fn settings(handle: &super::EmulatorHandle) -> String {
    [
        ("CFIMG_API_BASE_URL", handle.api_base()),
        ("CFIMG_BATCH_BASE_URL", handle.batch_base()),
        ("CLOUDFLARE_ACCOUNT_ID", handle.account_id().to_string()),
        ("CLOUDFLARE_API_TOKEN", handle.token().to_string()),
    ]
    .iter()
    .map(|(name, value)| format!("export {name}={}\n", shell_quote(value)))
    .collect()
}

/// `text` as one POSIX shell word: single quotes, each `'` written as `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_syntax() {
        assert_eq!(
            parse_rate_limit("1200/300s"),
            Ok(Some((1200, Duration::from_secs(300))))
        );
        assert_eq!(
            parse_rate_limit("50/1"),
            Ok(Some((50, Duration::from_secs(1))))
        );
        assert_eq!(
            parse_rate_limit("5/500ms"),
            Ok(Some((5, Duration::from_millis(500))))
        );
        assert_eq!(
            parse_rate_limit("10/5m"),
            Ok(Some((10, Duration::from_secs(300))))
        );
        assert_eq!(parse_rate_limit("off"), Ok(None));
        assert!(parse_rate_limit("0/1s").is_err());
        assert!(parse_rate_limit("5/1d").is_err());
        assert!(parse_rate_limit("5").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    #[test]
    fn new_flags_reach_the_config() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "emulator",
            "--list-lag",
            "2.5",
            "--fault-429-html",
            "0.25",
            "--edge-429",
            "--edge-429-retry-after",
            "--read-only-token",
            "a",
            "--read-only-token",
            "b",
            "--max-images",
            "7",
        ])
        .unwrap();
        let config = cli.args.config();
        assert_eq!(config.list_lag, Duration::from_millis(2500));
        assert_eq!(config.faults.p_429_html, 0.25);
        assert!(config.faults.edge_429 && config.faults.edge_429_retry_after);
        assert_eq!(config.read_only_tokens, ["a", "b"]);
        assert_eq!(config.max_images, 7);
        let strict = Cli::try_parse_from([
            "emulator",
            "--batch-window",
            "sliding",
            "--no-batch-ratelimit-headers",
        ])
        .unwrap()
        .args
        .config();
        assert_eq!(strict.batch_window, LimitWindow::Sliding);
        assert!(!strict.batch_ratelimit_headers);
        assert!(Cli::try_parse_from(["emulator", "--batch-window", "fixed"]).is_err());
        let defaults = Cli::try_parse_from(["emulator"]).unwrap().args.config();
        assert_eq!(defaults.list_lag, Duration::ZERO);
        assert!(defaults.read_only_tokens.is_empty());
        assert_eq!(defaults.batch_window, LimitWindow::Bucket);
        assert!(defaults.batch_ratelimit_headers);
        assert_eq!(defaults.max_images, super::super::DEFAULT_MAX_IMAGES);
        assert!(Cli::try_parse_from(["emulator", "--list-lag", "-1"]).is_err());
    }

    #[test]
    fn webhook_flags_reach_the_config_and_its_secret_is_not_printed() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "emulator",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "s3cret-value",
        ])
        .unwrap();
        assert!(!format!("{:?}", cli.args).contains("s3cret-value"));
        let hook = cli.args.config().webhook.expect("a destination");
        assert_eq!(hook.url, "http://127.0.0.1:9/hook");
        assert_eq!(hook.secret.as_deref(), Some("s3cret-value"));
        assert!(!format!("{hook:?}").contains("s3cret-value"));
    }
}
