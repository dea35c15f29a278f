//! A local emulator of the Cloudflare Images API (work in progress).
