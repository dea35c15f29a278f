//! The Cloudflare Images API: wire types and the HTTP client.
//!
//! - `client.rs`: `ImagesClient`, one request per call, each answer typed or a classified error.
//! - `types.rs`: the wire types (images, lists, stats, tokens, codes), shared with the emulator.

pub mod client;
pub mod types;
