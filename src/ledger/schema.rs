//! The ledger's schema and its forward migrations, by `PRAGMA user_version`.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 5;

/// Migrations, in order; entry `n` brings the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// Version 1: one folder per ledger, items keyed by their relative path alone.
const V1: &str = r#"
CREATE TABLE items (
    key          TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    sha256       TEXT,
    image_id     TEXT,
    url          TEXT,
    planned_id   TEXT,
    state        TEXT NOT NULL CHECK (state IN ('uploading', 'uploaded', 'failed', 'rejected')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    uploaded_at  TEXT,
    replaced_at  TEXT
);
CREATE INDEX items_image_id ON items(image_id);
CREATE INDEX items_state ON items(state);
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    command      TEXT NOT NULL,
    source       TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    uploaded     INTEGER NOT NULL DEFAULT 0,
    replaced     INTEGER NOT NULL DEFAULT 0,
    deduplicated INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    rejected     INTEGER NOT NULL DEFAULT 0,
    bytes        INTEGER NOT NULL DEFAULT 0,
    requests     INTEGER NOT NULL DEFAULT 0,
    throttled    INTEGER NOT NULL DEFAULT 0,
    outcome      TEXT
);
"#;

/// Version 2: many sources per ledger, one destination; items keyed by (source, key).
/// v1 rows keep their stamp: a NULL `stamp` means the v1 stamp, a hash of the key alone.
const V2: &str = r#"
CREATE TABLE destination (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    account_id   TEXT NOT NULL,             -- the account every image of this ledger is in
    api_base     TEXT NOT NULL,             -- the API it was reached at ('emulator' for --emulator)
    created_at   TEXT NOT NULL
);
CREATE TABLE sources (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,             -- dir, manifest, bucket, drafts
    location     TEXT NOT NULL,             -- canonical path, s3://bucket/prefix@endpoint, ...
    created_at   TEXT NOT NULL,
    UNIQUE (kind, location)
);
INSERT INTO sources (kind, location, created_at)
    SELECT 'dir', source, MIN(created_at) FROM items GROUP BY source;
ALTER TABLE items RENAME TO items_v1;
DROP INDEX items_image_id;
DROP INDEX items_state;
CREATE TABLE items (
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    key          TEXT NOT NULL,             -- within the source: relative path, URL, object key
    size         INTEGER NOT NULL,          -- bytes, at the last plan (0 when unknown)
    mtime_ns     INTEGER NOT NULL,          -- files: modification time, ns since the epoch
    etag         TEXT,                      -- objects: the listed ETag
    options      TEXT,                      -- digest of per-item settings (manifest rows)
    sha256       TEXT,                      -- content hash of the version last planned
    stamp        TEXT,                      -- cfimg_src of the image or intent (NULL: v1 stamp)
    image_id     TEXT,                      -- the image that holds this item now, if any
    url          TEXT,                      -- a delivery URL of that image
    planned_id   TEXT,                      -- while uploading: the custom id being written
    state        TEXT NOT NULL CHECK (state IN ('uploading', 'uploaded', 'failed', 'rejected', 'ignored')),
    attempts     INTEGER NOT NULL DEFAULT 0, -- HTTP requests spent on it the last time
    last_error   TEXT,                      -- why it failed, was rejected or was ignored
    retry_local  INTEGER NOT NULL DEFAULT 0, -- failed for a local reason: the next run retries
    check_after  TEXT,                      -- an ambiguous answer: look for duplicates after this
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    uploaded_at  TEXT,
    replaced_at  TEXT,
    PRIMARY KEY (source_id, key)
);
INSERT INTO items (source_id, key, size, mtime_ns, sha256, image_id, url, planned_id, state,
                   attempts, last_error, created_at, updated_at, uploaded_at, replaced_at)
    SELECT s.id, i.key, i.size, i.mtime_ns, i.sha256, i.image_id, i.url, i.planned_id, i.state,
           i.attempts, i.last_error, i.created_at, i.updated_at, i.uploaded_at, i.replaced_at
    FROM items_v1 i JOIN sources s ON s.kind = 'dir' AND s.location = i.source;
DROP TABLE items_v1;
CREATE INDEX items_image_id ON items(image_id);
CREATE INDEX items_planned_id ON items(planned_id) WHERE planned_id IS NOT NULL;
CREATE INDEX items_state ON items(state);
CREATE INDEX items_check_after ON items(check_after) WHERE check_after IS NOT NULL;
CREATE TABLE superseded (
    image_id     TEXT PRIMARY KEY,          -- an older image kept by --keep-replaced
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    key          TEXT NOT NULL,
    sha256       TEXT,
    url          TEXT,
    superseded_at TEXT NOT NULL
);
CREATE INDEX superseded_item ON superseded(source_id, key);
ALTER TABLE runs ADD COLUMN ignored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN failed_earlier INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN rejected_earlier INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN duplicates_deleted INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 3: a watched folder's failed items wait out a growing delay that survives a
/// restart, and items that left their source leave a tombstone (pruned after a while).
const V3: &str = r#"
ALTER TABLE items ADD COLUMN failures INTEGER NOT NULL DEFAULT 0; -- failed passes in a row
ALTER TABLE items ADD COLUMN retry_at TEXT;    -- failed: not retried by `watch` before this
CREATE INDEX items_retry_at ON items(source_id, retry_at) WHERE retry_at IS NOT NULL;
CREATE INDEX items_content ON items(source_id, sha256);
CREATE TABLE tombstones (
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    key          TEXT NOT NULL,
    image_id     TEXT,                      -- the image it held (NULL: it held none)
    sha256       TEXT,
    outcome      TEXT NOT NULL,             -- what became of that image
    removed_at   TEXT NOT NULL
);
CREATE INDEX tombstones_removed_at ON tombstones(removed_at);
"#;

/// Version 4: direct creator uploads minted by `cfimg direct-upload` and `cfimg serve`, one
/// row per draft of the `drafts` source. Self-contained, so that it can be renumbered.
/// The one-time upload URL is not stored: it is a credential until it is used.
const V4: &str = r#"
CREATE TABLE drafts (
    image_id     TEXT PRIMARY KEY,          -- the id the image will have
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    app          TEXT NOT NULL,             -- who minted it: an app key's name, or 'cli'
    creator      TEXT,
    metadata     TEXT,                      -- JSON text sent with the draft
    private      INTEGER NOT NULL DEFAULT 0, -- requireSignedURLs
    expires_at   TEXT NOT NULL,             -- the upload URL works until then
    state        TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'failed', 'expired')),
    url          TEXT,                      -- a delivery URL, once completed
    filename     TEXT,
    last_error   TEXT,                      -- why it failed
    notices      INTEGER NOT NULL DEFAULT 0, -- webhook deliveries received for it
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX drafts_state ON drafts(state, expires_at);
"#;

/// Version 5: where a source's items used to be served (`cfimg source set-old-base`), for
/// `cfimg redirects` and `cfimg rewrite`. Several bases per source (a site served the same
/// files under two hosts). Self-contained, so that it can be renumbered.
const V5: &str = r#"
CREATE TABLE old_bases (
    source_id    INTEGER NOT NULL REFERENCES sources(id),
    base         TEXT NOT NULL,             -- absolute http(s) URL ending in '/'
    created_at   TEXT NOT NULL,
    PRIMARY KEY (source_id, base)
);
"#;

pub(super) fn newer_schema(path: &Path, version: i32) -> Error {
    Error::Config(vec![format!(
        "ledger {} has schema version {version}, newer than this cfimg understands ({SCHEMA_VERSION}): upgrade cfimg",
        path.display()
    )])
}

/// Brings the schema up to [`SCHEMA_VERSION`]: a new ledger in one transaction, straight
/// to the current version; an older one one transaction per step, each logged.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(newer_schema(
            Path::new(conn.path().unwrap_or("ledger")),
            version,
        ));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version <= 0 {
        // The steps are the one definition of the schema; run together they create the
        // current version at once, and nothing was migrated.
        let tx = conn.transaction()?;
        for sql in MIGRATIONS {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        tracing::debug!(version = SCHEMA_VERSION, "new ledger created");
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i32 + 1)?;
        tx.commit()?;
        tracing::info!(from = i, to = i + 1, "ledger schema migrated");
    }
    Ok(())
}
