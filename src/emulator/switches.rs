//! Account and service switches: behaviours the 2026 API documents for some accounts or
//! allows without promising, so that tests can show the client copes with each.

/// The switches of one emulator (all off by default: the plain behaviour).
#[derive(Debug, Clone)]
pub struct Switches {
    /// `per_page` above this is refused with 400 code 5400 naming the limit (the 2026 v2
    /// description says "up to 1000 results per page" while the schema allows 10000).
    pub max_per_page: u32,
    /// A PATCH that changes `requireSignedURLs` answers with a new id (the API's own words:
    /// "Returns a new UID on a change"): the image moves to a fresh UUID, the old id is gone.
    pub new_id_on_signed_change: bool,
    /// Whether the account may upload AVIF (Enterprise only); refused otherwise with
    /// "AVIF input is not enabled for this account".
    pub avif_input: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            max_per_page: 10_000,
            new_id_on_signed_change: false,
            avif_input: true,
        }
    }
}
