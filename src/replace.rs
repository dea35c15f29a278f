//! Replacing a live image under the same id (path ids: there is no upsert, so the id must
//! be freed first) without ever losing it: its original bytes and settings are copied
//! aside before the DELETE, and put back under the same id if the new version is refused.

use std::io::Read;
use std::sync::atomic::AtomicU32;

use serde_json::Value;

use crate::api::client::Upload;
use crate::api::types::Image;
use crate::download::Spool;
use crate::error::{Error, Result};
use crate::item::Body;
use crate::rules;
use crate::transport::ApiLane;

/// A live image copied aside: its record and its original bytes in a temporary file.
#[derive(Debug)]
pub struct Backup {
    image: Image,
    bytes: Body,
}

/// Copies the image `id` aside; `None` when it does not exist (nothing to lose).
pub async fn backup(lane: &ApiLane, spent: &AtomicU32, id: &str) -> Result<Option<Backup>> {
    let image = match lane.call(spent, || lane.client.get(id)).await {
        Ok(image) => image,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let (spool, _) = Spool::create("cfimg-backup-")?;
    let copied = lane
        .call(spent, || {
            let p = spool.path().to_path_buf();
            async move {
                // A fresh file per attempt: a retry after a broken transfer starts over.
                match tokio::fs::File::create(&p).await {
                    Ok(mut file) => lane.client.blob_to(id, &mut file).await,
                    Err(source) => Err(Error::Io { path: p, source }).into(),
                }
            }
        })
        .await;
    match copied {
        Ok(()) => Ok(Some(Backup {
            image,
            bytes: spool.into_body(),
        })),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Puts a copied image back under its own id with its own metadata and settings.
pub async fn restore(lane: &ApiLane, spent: &AtomicU32, backup: &Backup) -> Result<Image> {
    let Body::File { path, .. } = &backup.bytes else {
        return Err(Error::Invalid("a backup is always a file".into()));
    };
    let mime = sniff_mime(path);
    let metadata = Value::Object(backup.image.meta.clone().unwrap_or_default()).to_string();
    let filename = backup.image.filename.as_deref().unwrap_or(&backup.image.id);
    let upload = Upload {
        body: &backup.bytes,
        filename,
        mime,
        id: Some(&backup.image.id),
        metadata: &metadata,
        require_signed_urls: backup.image.require_signed_urls,
        creator: backup.image.creator.as_deref(),
        size: None,
        held: None,
        ready: None,
    };
    let sent = lane.call(spent, || lane.client.upload(&upload)).await;
    match sent {
        Ok(sent) => Ok(sent.image),
        // An earlier attempt of this restore did store it.
        Err(e) if e.is_conflict() => lane.call(spent, || lane.client.get(&backup.image.id)).await,
        Err(e) => Err(e),
    }
}

impl Backup {
    /// Where the original bytes are, for a message when they could not be put back.
    pub fn keep_file(self) -> Option<std::path::PathBuf> {
        match self.bytes {
            Body::File {
                spool: Some(spool), ..
            } => std::sync::Arc::into_inner(spool).and_then(|p| p.keep().ok()),
            _ => None,
        }
    }
}

fn sniff_mime(path: &std::path::Path) -> &'static str {
    let mut head = Vec::with_capacity(rules::SNIFF_BYTES);
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(rules::SNIFF_BYTES as u64).read_to_end(&mut head));
    match read.ok().and_then(|_| rules::sniff_format(&head)) {
        Some(f) => f.mime(),
        None => "application/octet-stream",
    }
}
