//! `cfimg redirects` and `cfimg redirects check` (issue 22): a real nginx serving the
//! generated map, the other formats checked against their servers' rules, and a ledger
//! of many long keys that nginx must still load.

mod formats;
mod nginx;
mod support;
