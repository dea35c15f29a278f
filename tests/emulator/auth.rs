//! Authentication on the API and batch hosts.
