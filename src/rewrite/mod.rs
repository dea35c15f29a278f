//! `cfimg rewrite`: old image URLs in pages, stylesheets, Markdown, JSON, XML and SQL dumps
//! replaced by their delivery URLs, streamed, journaled, undoable.
//!
//! - `forms.rs`: the spellings of an old base that are searched for.
//! - `engine.rs`: the streaming rewriter (chunks with a carried look-ahead; PHP-serialized
//!   length prefixes corrected).
//! - `journal.rs`: the journal of changes and `--undo`.
//! - `files.rs`: which files, and where their output goes.

pub mod engine;
pub mod files;
pub mod forms;
pub mod journal;

#[cfg(test)]
mod tests;

pub use engine::{Edit, Matcher, Miss, Options, Stats};
pub use forms::Bases;
