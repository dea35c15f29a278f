//! cfimg moves images into Cloudflare Images and keeps them there in sync.

pub mod api;
pub mod emulator;
pub mod error;
pub mod rules;
pub mod secret;
