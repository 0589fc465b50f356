//! Purges across the fleet. A purge deletes the source's prefix in the store and appends a record
//! `purges/{unix-millis}-{source-hex}`; every node lists the records every `--purge-poll` (a listing that starts
//! after the last record it saw, less a margin for clocks out of step) and drops its own copies of each source
//! named. Records older than the longest TTL are deleted by whichever node lists them.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::PoisonError;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use super::{SharedTier, millis, parse_purge_record, unix_millis};
use crate::key::CacheKey;

/// How far back each listing reaches behind the newest record seen: a node whose clock is behind writes records
/// that sort before it. Records seen within this window are remembered, so none is applied twice.
const CLOCK_MARGIN: Duration = Duration::from_secs(120);
/// How often a node lists all the records (not just the new ones) to delete those past the retention.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Own records remembered (this node's purges, which its poll must not apply to itself again).
const OWN_RECORDS: usize = 1024;
/// Records applied per poll at most; the rest wait for the next poll (a purge storm stays bounded in work).
const MAX_RECORDS_PER_POLL: usize = 10_000;
/// The file in the cache directory that remembers how far the purge records were applied, so a node restarted
/// with its disk applies what it missed while down (and one with a new disk has nothing to apply).
pub const CURSOR_FILE: &str = "shared-purges.cursor";

/// The records this node wrote, most recent last.
#[derive(Debug, Default)]
pub(super) struct OwnRecords(VecDeque<String>);

/// What a shared purge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedPurge {
    /// Objects deleted from the store (the original, its variants, a lease).
    pub objects: usize,
    /// Whether the store was reached and the record written: false means other nodes will not hear of it.
    pub recorded: bool,
}

impl SharedTier {
    /// Deletes every object of `source` from the store and appends the purge record that tells the other nodes.
    /// Not skipped while the breaker is open: a purge must reach the store or say that it did not.
    pub async fn purge(&self, source: &CacheKey) -> SharedPurge {
        let inner = &self.inner;
        let dir = inner.layout.source_dir(source);
        let deleting = async {
            let listed = inner.store.list(Some(&dir)).map_ok(|meta| meta.location).boxed();
            inner.store.delete_stream(listed).try_collect::<Vec<_>>().await
        };
        let objects = match tokio::time::timeout(inner.long_timeout, deleting).await {
            Ok(Ok(deleted)) => deleted.len(),
            Ok(Err(error)) => {
                inner.breaker.failed("purge", &error);
                tracing::error!(store = %inner.describe, %error, "purge could not delete from the shared cache");
                return SharedPurge { objects: 0, recorded: false };
            }
            Err(_) => {
                inner.breaker.failed("purge", &"timed out");
                tracing::error!(store = %inner.describe, "purge timed out deleting from the shared cache");
                return SharedPurge { objects: 0, recorded: false };
            }
        };
        let record = inner.layout.purge_record(unix_millis(), source);
        {
            let mut own = inner.own_purges.lock().unwrap_or_else(PoisonError::into_inner);
            if own.0.len() == OWN_RECORDS {
                own.0.pop_front();
            }
            own.0.push_back(record.to_string());
        }
        let recorded = match tokio::time::timeout(inner.long_timeout, inner.store.put(&record, Bytes::new().into()))
            .await
        {
            Ok(Ok(_)) => {
                inner.breaker.succeeded();
                true
            }
            Ok(Err(error)) => {
                inner.breaker.failed("purge record", &error);
                tracing::error!(store = %inner.describe, %error, "purge record not written: other nodes keep their copies");
                false
            }
            Err(_) => {
                inner.breaker.failed("purge record", &"timed out");
                tracing::error!(store = %inner.describe, "purge record timed out: other nodes keep their copies");
                false
            }
        };
        SharedPurge { objects, recorded }
    }

    fn is_own_record(&self, name: &str) -> bool {
        self.inner.own_purges.lock().unwrap_or_else(PoisonError::into_inner).0.iter().any(|own| own == name)
    }
}

/// One node's reading of the purge records: where it is, and what it already applied.
#[derive(Debug)]
pub struct PurgeFeed {
    tier: SharedTier,
    /// Applied up to this record time (Unix milliseconds).
    applied_until: u64,
    /// Records within `CLOCK_MARGIN` of `applied_until` already applied.
    seen: HashSet<String>,
    /// Where `applied_until` is kept between runs (in the cache directory), if anywhere.
    cursor: Option<PathBuf>,
    /// When the records were last swept for old ones (Unix milliseconds; 0: at the first poll).
    swept_at: u64,
    /// What the cursor file holds, as far as this feed knows.
    saved: Option<u64>,
}

impl PurgeFeed {
    /// Follows the records of `tier` from where the cursor file in `cache_dir` says (what this node's disk missed
    /// while it was down), or from now without one: a node with nothing on disk has nothing to purge.
    pub fn new(tier: SharedTier, cache_dir: Option<PathBuf>) -> PurgeFeed {
        let cursor = cache_dir.map(|dir| dir.join(CURSOR_FILE));
        let saved = cursor
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse::<u64>().ok());
        PurgeFeed {
            tier,
            applied_until: saved.unwrap_or_else(unix_millis),
            seen: HashSet::new(),
            cursor,
            swept_at: 0,
            saved,
        }
    }

    /// Lists the records since the last poll and returns the sources other nodes purged, each once. Deletes the
    /// records past the retention it comes across (all of them once an hour). `None` when the store was skipped
    /// or failed: the next poll tries again from the same place.
    pub async fn poll(&mut self) -> Option<Vec<CacheKey>> {
        let tier = &self.tier;
        let inner = &tier.inner;
        if !inner.breaker.allows() {
            return None;
        }
        let now = unix_millis();
        let sweep = now.saturating_sub(self.swept_at) >= millis(SWEEP_INTERVAL);
        let dir = inner.layout.purges();
        let from = inner.layout.purges_from(self.applied_until.saturating_sub(millis(CLOCK_MARGIN)));
        let listing = async {
            let listed =
                if sweep { inner.store.list(Some(&dir)) } else { inner.store.list_with_offset(Some(&dir), &from) };
            listed.map_ok(|meta| meta.location).try_collect::<Vec<_>>().await
        };
        let mut records = match tokio::time::timeout(inner.long_timeout, listing).await {
            Ok(Ok(records)) => {
                inner.breaker.succeeded();
                records
            }
            Ok(Err(error)) => {
                inner.breaker.failed("purge poll", &error);
                return None;
            }
            Err(_) => {
                inner.breaker.failed("purge poll", &"timed out");
                return None;
            }
        };
        if sweep {
            self.swept_at = now;
        }
        records.sort_unstable();
        let retention = millis(inner.options.purge_retention);
        let window_start = self.applied_until.saturating_sub(millis(CLOCK_MARGIN));
        let mut purged = Vec::new();
        let mut old = Vec::new();
        for record in records {
            let Some((at, source)) = parse_purge_record(&record) else { continue };
            if now.saturating_sub(at) > retention {
                old.push(record);
                continue;
            }
            if at < window_start || purged.len() == MAX_RECORDS_PER_POLL {
                continue;
            }
            let name = record.to_string();
            if !self.seen.insert(name.clone()) {
                continue;
            }
            self.applied_until = self.applied_until.max(at);
            if !tier.is_own_record(&name) {
                purged.push(source);
            }
        }
        let window_start = self.applied_until.saturating_sub(millis(CLOCK_MARGIN));
        self.seen.retain(|name| {
            parse_purge_record(&object_store::path::Path::from(name.as_str())).is_some_and(|(at, _)| at >= window_start)
        });
        if !old.is_empty() {
            let count = old.len();
            let stream = futures_util::stream::iter(old.into_iter().map(Ok)).boxed();
            let deleting = inner.store.delete_stream(stream).for_each(|_| async {});
            let _ = tokio::time::timeout(inner.long_timeout, deleting).await;
            tracing::debug!(count, "deleted purge records past the retention");
        }
        self.save();
        Some(purged)
    }

    /// Keeps the cursor for the next run, when it moved; a failure only means re-applying some records then. On a
    /// blocking thread, not awaited: the cache directory may be on a disk that hangs.
    fn save(&mut self) {
        let Some(path) = self.cursor.clone() else { return };
        if self.saved == Some(self.applied_until) {
            return;
        }
        self.saved = Some(self.applied_until);
        let applied_until = self.applied_until;
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("tmp");
            let written = std::fs::write(&tmp, applied_until.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(error) = written {
                tracing::debug!(path = %path.display(), %error, "could not save the purge cursor");
            }
        });
    }

    /// How often to poll.
    pub fn interval(&self) -> Duration {
        self.tier.options().purge_poll
    }
}
