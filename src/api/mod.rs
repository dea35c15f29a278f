//! The Cloudflare Images API: wire types and the HTTP client.
//!
//! - `client.rs`: `ImagesClient`, one request per call, each answer typed or a classified error.
//! - `policy.rs`: the quota a server announces in `Ratelimit-Policy`, which a lane paces by.
//! - `types.rs`: the wire types (images, lists, stats, tokens, codes), shared with the emulator.

pub mod client;
pub mod policy;
pub mod types;
