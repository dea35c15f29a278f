//! The emulator, tested over HTTP.
