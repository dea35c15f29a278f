//! The Cloudflare Images API: wire types and the HTTP client.

pub mod client;
pub mod types;
