use rusqlite::Connection;

use super::writer::Failure;
use super::*;
use crate::item::{SourceId, SourceKind};

/// A writer on a new ledger in a temporary folder (kept while the first value lives), with
/// one folder source registered per location: the folder, the ledger's path, the writer,
/// its thread and the sources' numbers.
pub(super) async fn fresh(
    locations: &[&str],
) -> (
    tempfile::TempDir,
    PathBuf,
    LedgerWriter,
    std::thread::JoinHandle<Result<()>>,
    Vec<i64>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let (writer, thread) = LedgerWriter::spawn(&path).unwrap();
    let mut sources = Vec::new();
    for location in locations {
        let id = writer
            .source(&SourceId::new(SourceKind::Dir, *location))
            .await
            .unwrap();
        sources.push(id);
    }
    (dir, path, writer, thread, sources)
}

pub(super) fn version(source_id: i64, key: &str, sha: &str) -> Version {
    Version {
        source_id,
        key: key.into(),
        size: 10,
        mtime_ns: 5,
        etag: None,
        options: None,
        sha256: Some(sha.into()),
        ticket: Default::default(),
    }
}

#[tokio::test]
async fn intent_then_outcome_is_visible_to_readers() {
    let (_dir, path, writer, thread, sources) = fresh(&["/a", "/b"]).await;
    let (a, b) = (sources[0], sources[1]);
    assert_ne!(a, b);
    assert_eq!(
        writer
            .source(&SourceId::new(SourceKind::Dir, "/a"))
            .await
            .unwrap(),
        a
    );
    let reader = Ledger::open_read_only(&path).unwrap().unwrap();
    writer
        .commit(Record::Intent {
            version: version(a, "x.jpg", "s1"),
            planned_id: Some("x.jpg".into()),
            stamp: "st".into(),
        })
        .await
        .unwrap();
    let row = reader.lookup(a, "x.jpg").unwrap().unwrap();
    assert_eq!(row.state, State::Uploading);
    assert_eq!(row.planned_id.as_deref(), Some("x.jpg"));
    assert_eq!(row.source, "dir:/a");
    assert!(reader.lookup(b, "x.jpg").unwrap().is_none());
    writer
        .commit(Record::Uploaded {
            version: version(a, "x.jpg", "s1"),
            image_id: "x.jpg".into(),
            url: Some("u".into()),
            attempts: 2,
            replaced: false,
            stamp: None,
            check_after: None,
            superseded: None,
        })
        .await
        .unwrap();
    writer
        .commit(Record::Failed {
            version: version(b, "x.txt", "s2"),
            reason: "not an image".into(),
            attempts: 0,
            failure: Failure::Rejected,
            image_gone: false,
            check_after: None,
        })
        .await
        .unwrap();
    let row = reader.lookup(a, "x.jpg").unwrap().unwrap();
    assert_eq!(
        (
            row.state,
            row.image_id.as_deref(),
            row.planned_id,
            row.stamp.as_deref()
        ),
        (State::Uploaded, Some("x.jpg"), None, Some("st"))
    );
    assert!(reader.image_shared("x.jpg", b, "x.jpg").unwrap());
    assert!(!reader.image_shared("x.jpg", a, "x.jpg").unwrap());
    let counts = reader.state_counts().unwrap();
    assert_eq!(
        (counts.uploaded, counts.rejected, counts.uploaded_bytes),
        (1, 1, 10)
    );
    assert_eq!(
        reader.failures(false).unwrap()[0].last_error.as_deref(),
        Some("not an image")
    );
    drop(writer);
    thread.join().unwrap().unwrap();
}

#[tokio::test]
async fn one_writer_per_ledger_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let (writer, thread) = LedgerWriter::spawn(&path).unwrap();
    let err = LedgerWriter::spawn(&path).unwrap_err().to_string();
    assert!(err.contains("another cfimg run"), "{err}");
    drop(writer);
    thread.join().unwrap().unwrap();
    assert!(
        LedgerWriter::spawn(&path).is_ok(),
        "the lock goes with the writer"
    );
}

#[tokio::test]
async fn a_ledger_belongs_to_one_destination() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let (writer, thread) = LedgerWriter::spawn(&path).unwrap();
    let real = Destination {
        account_id: "acc1".into(),
        api_base: "https://api.cloudflare.com/client/v4".into(),
    };
    writer.claim_destination(&real).await.unwrap();
    writer.claim_destination(&real).await.unwrap();
    let err = writer
        .claim_destination(&Destination {
            account_id: "acc1".into(),
            api_base: "emulator".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, crate::error::Error::Config(_)), "{err}");
    assert!(err.to_string().contains("another --ledger"), "{err}");
    drop(writer);
    thread.join().unwrap().unwrap();
    let reader = Ledger::open_read_only(&path).unwrap().unwrap();
    assert_eq!(reader.destination().unwrap(), Some(real));
}

#[test]
fn refuses_a_ledger_from_a_newer_cfimg() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Ledger::open(&path).unwrap_err().to_string();
    assert!(err.contains("upgrade cfimg"), "{err}");
}

/// A ledger written by cfimg 0.1 (schema v1, two uploaded files, one rejected, one
/// interrupted upload), committed as a fixture.
#[test]
fn a_v1_ledger_migrates_forward_keeping_every_row() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ledger-v1.sqlite");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    std::fs::copy(&fixture, &path).unwrap();
    let before: Vec<(String, String, Option<String>)> = {
        let c = Connection::open(&path).unwrap();
        let v: i32 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
        let mut s = c
            .prepare("SELECT key, state, image_id FROM items ORDER BY key")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert!(before.len() >= 3, "{before:?}");
    drop(Ledger::open(&path).unwrap());
    let l = Ledger::open_read_only(&path).unwrap().unwrap();
    let rows = l.all_rows().unwrap();
    let after: Vec<(String, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                serde_json::to_value(r.state)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                r.image_id.clone(),
            )
        })
        .collect();
    assert_eq!(before, after);
    assert!(
        rows.iter()
            .all(|r| r.source.starts_with("dir:/") && r.stamp.is_none())
    );
    // v1 stamps hashed the key alone; migrated rows still resolve to them.
    assert_eq!(
        rows[0].stamp_source(),
        crate::stamp::source_hash_v1(&rows[0].key)
    );
    assert!(l.last_run().unwrap().is_some());
}

#[test]
fn maintenance_records_found_rows_requeues_and_adopts_and_rows_stream_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let mut m = Maintenance::open(&path).unwrap();
    // One maintainer at a time, like one run at a time.
    assert!(matches!(
        LedgerWriter::spawn(&path).unwrap_err(),
        Error::LedgerBusy(_)
    ));
    let a = m.source(&SourceId::new(SourceKind::Dir, "/a")).unwrap();
    let b = m.source(&SourceId::new(SourceKind::Dir, "/b")).unwrap();
    let found = |key: &str, id: &str| RebuiltRow {
        key: key.into(),
        size: 3,
        mtime_ns: 9,
        etag: None,
        options: None,
        sha256: Some("s".into()),
        stamp: format!("st-{key}"),
        image_id: id.into(),
        url: Some(format!("https://d/{id}/public")),
        uploaded_at: None,
    };
    assert_eq!(
        m.record_found(a, &[found("x", "ix"), found("y", "iy")])
            .unwrap(),
        2
    );
    assert_eq!(m.record_found(b, &[found("x", "bx")]).unwrap(), 1);
    // Rows already there are left alone.
    assert_eq!(m.record_found(a, &[found("x", "other")]).unwrap(), 0);
    assert!(m.requeue(a, "y", "gone").unwrap());
    assert!(!m.requeue(a, "y", "gone").unwrap(), "only uploaded rows");
    assert!(m.adopt(b, "x", "twin", None).unwrap());

    let l = m.ledger();
    assert_eq!(l.find_source("dir:/a").unwrap(), Some(a));
    assert_eq!(l.find_source("/b").unwrap(), Some(b));
    assert_eq!(l.find_source("/c").unwrap(), None);
    let mut keys = Vec::new();
    l.for_each_row(Some(a), |r| {
        keys.push((r.key.clone(), r.state, r.image_id.clone(), r.retry_local));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        keys,
        [
            ("x".into(), State::Uploaded, Some("ix".into()), false),
            ("y".into(), State::Failed, None, true)
        ]
    );
    let mut all = 0;
    l.for_each_row(None, |_| {
        all += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(all, 3);
    let bx = l.lookup(b, "x").unwrap().unwrap();
    assert_eq!(
        (bx.image_id.as_deref(), bx.url.as_deref()),
        (Some("twin"), None),
        "a stale URL is not kept"
    );
    assert_eq!(bx.stamp.as_deref(), Some("st-x"));
}

#[tokio::test]
async fn the_writer_lock_is_on_the_file_whatever_its_name_and_seen_from_outside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let hard = dir.path().join("hard.sqlite");
    let soft = dir.path().join("soft.sqlite");
    let (writer, thread) = LedgerWriter::spawn(&path).unwrap();
    std::fs::hard_link(&path, &hard).unwrap();
    std::os::unix::fs::symlink(&path, &soft).unwrap();
    for other in [&hard, &soft] {
        assert!(matches!(
            LedgerWriter::spawn(other).unwrap_err(),
            Error::LedgerBusy(_)
        ));
        assert!(is_locked(other));
    }
    drop(writer);
    thread.join().unwrap().unwrap();
    assert!(!is_locked(&path));

    // Another process's lock is read from /proc/locks, without opening the file.
    let other = dir.path().join("other.sqlite");
    std::fs::write(&other, b"").unwrap();
    let mut holder = std::process::Command::new("flock")
        // -o: flock itself holds the lock, not the command it waits for.
        .args(["-x", "-o"])
        .arg(&other)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !is_locked(&other) {
        assert!(std::time::Instant::now() < deadline, "lock not seen");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(!is_locked(&other));
}

#[tokio::test]
async fn a_cached_reader_query_is_not_compiled_again_for_each_binding() {
    let (_dir, path, writer, thread, sources) = fresh(&["/a"]).await;
    let a = sources[0];
    writer
        .commit(Record::Intent {
            version: version(a, "x.jpg", "s1"),
            planned_id: Some("x.jpg".into()),
            stamp: "st".into(),
        })
        .await
        .unwrap();
    let reader = Ledger::open_read_only(&path).unwrap().unwrap();
    for id in ["x.jpg", "y.jpg", "z.jpg", "x.jpg"] {
        let _ = reader.holder_of(id, a, "other.jpg").unwrap();
    }
    let stmt = reader.conn.prepare_cached(&read::HOLDER_OF_SQL).unwrap();
    // Recompiling at every new binding made the statement cache worthless (issue 20).
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    drop(stmt);
    drop(writer);
    thread.join().unwrap().unwrap();
}

#[tokio::test]
async fn the_holder_of_an_id_is_the_uploaded_item_before_one_still_writing_it() {
    let (_dir, path, writer, thread, sources) = fresh(&["/a"]).await;
    let a = sources[0];
    // "w.jpg" is still writing the id; "u.jpg" holds it.
    for key in ["w.jpg", "u.jpg"] {
        writer
            .commit(Record::Intent {
                version: version(a, key, "s"),
                planned_id: Some("x.jpg".into()),
                stamp: "st".into(),
            })
            .await
            .unwrap();
    }
    let reader = Ledger::open_read_only(&path).unwrap().unwrap();
    let writing = reader.holder_of("x.jpg", a, "me.jpg").unwrap().unwrap();
    assert_eq!(writing.state, State::Uploading);
    writer
        .commit(Record::Uploaded {
            version: version(a, "u.jpg", "s"),
            image_id: "x.jpg".into(),
            url: None,
            attempts: 1,
            replaced: false,
            stamp: None,
            check_after: None,
            superseded: None,
        })
        .await
        .unwrap();
    let holder = reader.holder_of("x.jpg", a, "me.jpg").unwrap().unwrap();
    assert_eq!(
        (holder.key.as_str(), holder.state),
        ("u.jpg", State::Uploaded)
    );
    // An item is never its own holder.
    let other = reader.holder_of("x.jpg", a, "u.jpg").unwrap().unwrap();
    assert_eq!(other.key, "w.jpg");
    assert!(reader.holder_of("y.jpg", a, "me.jpg").unwrap().is_none());
    drop(writer);
    thread.join().unwrap().unwrap();
}

/// A withdrawal deletes the row its own intent wrote and nothing else: not the row of an
/// intent with another stamp (a later plan of the item), not a row that holds an image.
#[tokio::test]
async fn a_withdrawn_intent_deletes_only_the_row_it_wrote() {
    let (_dir, path, writer, _thread, sources) = fresh(&["/a"]).await;
    let a = sources[0];
    let reader = Ledger::open_read_only(&path).unwrap().unwrap();
    let intent = |key: &str, stamp: &str| Record::Intent {
        version: version(a, key, "s1"),
        planned_id: Some(key.into()),
        stamp: stamp.into(),
    };
    let withdrawn = |key: &str, stamp: &str| Record::Withdrawn {
        source_id: a,
        key: key.into(),
        stamp: stamp.into(),
    };
    for key in ["mine.png", "later.png", "stored.png"] {
        writer.commit(intent(key, "st")).await.unwrap();
    }
    writer.commit(intent("later.png", "st2")).await.unwrap();
    writer
        .commit(Record::Uploaded {
            version: version(a, "stored.png", "s1"),
            image_id: "stored.png".into(),
            url: None,
            attempts: 1,
            replaced: false,
            stamp: Some("st".into()),
            check_after: None,
            superseded: None,
        })
        .await
        .unwrap();
    for key in ["mine.png", "later.png", "stored.png"] {
        writer.commit(withdrawn(key, "st")).await.unwrap();
    }
    assert!(reader.lookup(a, "mine.png").unwrap().is_none());
    let later = reader.lookup(a, "later.png").unwrap().unwrap();
    assert_eq!(
        (later.state, later.stamp.as_deref()),
        (State::Uploading, Some("st2"))
    );
    let stored = reader.lookup(a, "stored.png").unwrap().unwrap();
    assert_eq!(stored.state, State::Uploaded);
}
