//! The rate-limit window and penalty on both hosts.
