//! `cfimg verify` beyond the listing: `--deep` compares the stored pictures with their sources.

mod deep;
mod deep_bucket;
