//! The recheck: the second look after ambiguous answers (`upload.list_lag_secs`; "settle"
//! is the watch's quiet time, not this). Lists lag behind uploads, so a stamp lookup
//! right after a 5xx or a dropped connection may miss an image that was stored; the upload
//! then goes again and two images hold one item. Every item that had an ambiguous answer
//! records when to look again (`check_after`, in the ledger, so a kill does not lose it);
//! this stage waits for that time, lists the item's images by stamp, keeps the recorded one
//! and deletes the others.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::ledger::{LedgerWriter, Record, SharedReader, State};
use crate::stamp::Stamp;
use crate::transport::ApiLane;
use crate::transport::retry;
use crate::upload::lookup::{self, Wanted};

/// What the recheck did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rechecked {
    /// Items checked.
    pub checked: u64,
    /// Duplicates deleted.
    pub deleted: u64,
    /// Items left for a later run (their image was not listed yet, or the run stopped).
    pub pending: u64,
}

/// Checks every pending item of a source once its time has come; returns early, leaving
/// the rest pending, when `stop` is cancelled.
pub async fn recheck(
    lane: &ApiLane,
    reader: &SharedReader,
    writer: &LedgerWriter,
    source_id: i64,
    list_lag: Duration,
    stop: &CancellationToken,
) -> Result<Rechecked> {
    let mut done = Rechecked::default();
    let spent = AtomicU32::new(0);
    let mut seen = std::collections::HashSet::new();
    // Until a pass finds nothing new: outcomes recorded while a pass ran show up in the next.
    loop {
        // Outcomes recorded but not yet committed (the writer groups them) would be missed.
        writer.flush().await?;
        let rows: Vec<_> = reader
            .with(|l| l.pending_checks(source_id))?
            .into_iter()
            .filter(|r| r.state == State::Uploaded && seen.insert(r.key.clone()))
            .collect();
        if rows.is_empty() {
            break;
        }
        tracing::debug!(
            pending = rows.len(),
            "items with an ambiguous answer to look at again"
        );
        for row in rows {
            let due = row
                .check_after
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(Utc::now);
            // A shorter list lag than the one recorded applies at once: the wait is never
            // longer than the configured lag.
            if let Ok(wait) = (due - Utc::now()).to_std().map(|w| w.min(list_lag)) {
                tracing::info!(
                    key = %row.key,
                    wait_secs = wait.as_secs_f64(),
                    "waiting for lists to catch up before looking for duplicates of an ambiguous upload"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {
                        done.pending += 1;
                        continue;
                    }
                }
            }
            let stamp = Stamp {
                source: row.stamp_source(),
                set: None,
                sha256: row.sha256.clone(),
            };
            let keep = reader.with(|l| l.superseded_ids(row.source_id, &row.key))?;
            let since = due
                - chrono::TimeDelta::from_std(list_lag).unwrap_or_default()
                - chrono::TimeDelta::minutes(1);
            let resolved = retry::call(lane.policy, || {
                let wanted = Wanted {
                    stamp: &stamp,
                    keep: &keep,
                    prefer: row.image_id.as_deref(),
                };
                lookup::resolve(lane, &spent, wanted, since)
            })
            .await?;
            done.deleted += resolved.deleted;
            if resolved.preferred_missing {
                tracing::warn!(key = %row.key, "its image is not listed yet; checking again in a later run");
                done.pending += 1;
                continue;
            }
            done.checked += 1;
            writer
                .record(Record::Checked {
                    source_id: row.source_id,
                    key: row.key.clone(),
                })
                .await?;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::config::{self, RawConfig};

    fn lag_of(toml: &str) -> std::time::Duration {
        let raw: RawConfig = toml::from_str(toml).unwrap();
        let creds = RawConfig {
            account_id: Some("abc123".into()),
            api_token: Some(crate::secret::Secret::new("tok")),
            ..RawConfig::default()
        };
        config::validate(creds.merge(raw), true)
            .unwrap()
            .upload
            .list_lag
    }

    /// The closing recheck of a run comes right after the last job's outcome, which the
    /// writer may still hold to share a commit (up to 100 ms): it must see that outcome, or
    /// the duplicate its ambiguous answer left stays in the account.
    #[tokio::test]
    async fn a_recheck_right_after_an_ambiguous_outcome_sees_it_and_deletes_the_duplicate() {
        use crate::api::client::Upload;
        use crate::item::{Body, SourceId, SourceKind};
        use crate::ledger::{Ledger, LedgerWriter, Record, SharedReader, Version};
        use crate::stamp::Stamp;
        use crate::transport::ApiLane;

        let emulator = crate::emulator::start(
            ([127, 0, 0, 1], 0).into(),
            crate::emulator::EmulatorConfig::default(),
        )
        .await
        .unwrap();
        let raw = RawConfig {
            account_id: Some(emulator.account_id().into()),
            api_token: Some(crate::secret::Secret::new(emulator.token())),
            api_base_url: Some(emulator.api_base()),
            ..RawConfig::default()
        };
        let cfg = config::validate(raw, true).unwrap();
        let lane = ApiLane::from_config(&cfg).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 0]))
            .save(&png)
            .unwrap();
        let source = SourceId::new(SourceKind::Dir, "/photos");
        let sha = "ab".repeat(32);
        let stamp = Stamp::new(&source, "a.png", Some(&sha));
        let metadata = stamp.metadata_json(&serde_json::Map::new());
        let body = Body::file(png);
        let form = Upload {
            body: &body,
            filename: "a.png",
            mime: "image/png",
            id: None,
            metadata: &metadata,
            require_signed_urls: false,
            creator: None,
            held: None,
            size: None,
            ready: None,
        };
        // The upload whose answer was lost, and the retry that stored it again.
        let first = lane.client.upload(&form).await.result.unwrap().image;
        let second = lane.client.upload(&form).await.result.unwrap().image;

        let path = dir.path().join("l.sqlite");
        let (writer, thread) = LedgerWriter::spawn(&path).unwrap();
        let source_id = writer.source(&source).await.unwrap();
        let reader = SharedReader::new(Ledger::open_read_only(&path).unwrap().unwrap());
        writer
            .record(Record::Uploaded {
                version: Version {
                    source_id,
                    key: "a.png".into(),
                    size: 10,
                    mtime_ns: 5,
                    etag: None,
                    options: None,
                    sha256: Some(sha),
                    ticket: Default::default(),
                },
                image_id: second.id.clone(),
                url: None,
                attempts: 2,
                replaced: false,
                stamp: Some(stamp.source.clone()),
                check_after: Some(crate::ledger::timestamp(chrono::Utc::now())),
                superseded: None,
            })
            .await
            .unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let done = super::recheck(&lane, &reader, &writer, source_id, Duration::ZERO, &stop)
            .await
            .unwrap();
        assert_eq!(
            (done.checked, done.deleted, done.pending),
            (1, 1, 0),
            "{done:?}"
        );
        assert!(lane.client.get(&first.id).await.result.is_err());
        assert_eq!(
            lane.client.get(&second.id).await.result.unwrap().id,
            second.id
        );
        drop(writer);
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn the_list_lag_keeps_its_old_name_settle_as_an_alias() {
        let secs = std::time::Duration::from_secs_f64;
        assert_eq!(lag_of(""), secs(config::DEFAULT_LIST_LAG_SECS));
        assert_eq!(lag_of("[upload]\nlist_lag_secs = 4.5"), secs(4.5));
        // The key's name before the rename still works.
        assert_eq!(lag_of("[upload]\nsettle_secs = 3.5"), secs(3.5));
        for flag in ["--list-lag-secs", "--settle-secs"] {
            let cli = Cli::try_parse_from(["cfimg", "migrate", "photos", flag, "2.5"]).unwrap();
            let Command::Migrate(args) = cli.command else {
                panic!("not migrate")
            };
            assert_eq!(args.list_lag_secs, Some(2.5), "{flag}");
        }
    }
}
