//! Operations: shell completions and man pages, the metrics of `migrate --metrics-addr`
//! checked with Prometheus's own `promtool`.

mod completions;
mod prometheus;
