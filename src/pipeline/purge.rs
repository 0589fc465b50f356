//! Purge: removing an original and every variant made from it from the cache tiers, and the bookkeeping that
//! makes that exact: every entry a fill stores names its source, and every fill stores only if its source was not
//! purged since the fill began.

use mirage_cache::{CacheKey, Entry, PurgeGeneration, PurgeOutcome};

use super::Pipeline;
use crate::request::{ImageRequest, Target};

/// Where a fill stores what it makes: the entry's key, the key of the original it is made from, and that
/// original's purge generation when the fill began.
#[derive(Clone, Copy, Debug)]
pub(super) struct StoreAt {
    /// The key stored under.
    pub key: CacheKey,
    /// The original's key (the same as `key` for an original).
    pub source: CacheKey,
    since: PurgeGeneration,
}

/// `entry`, naming `source` as the original it was made from (a no-op when it already does).
pub(super) fn sourced(entry: Entry, source: CacheKey) -> Entry {
    if entry.meta().source() == Some(source) { entry } else { entry.with_source(source) }
}

impl Pipeline {
    /// Removes the original at `target` and every variant made from it from memory and disk, and keeps fills in
    /// flight for it from storing what they make; with a shared tier, also from the store, with the purge record
    /// that makes every other node do the same. Returns how many local entries were removed (0 when nothing of it
    /// was cached here) and what happened in the store. Costs the number of its variants, not a scan of the cache.
    pub async fn purge(&self, target: &Target) -> PurgeOutcome {
        let source = ImageRequest::source_key_of(target);
        let outcome = self.inner.cache.purge_everywhere(&source).await;
        // A breaker's retry schedule for the source is about an answer that is gone.
        self.inner.health.revalidated(&source);
        self.inner.metrics.purged(u64::try_from(outcome.entries).unwrap_or(u64::MAX));
        outcome
    }

    /// Where a fill for `key`, made from the original `source`, will store: takes the purge generation now.
    pub(super) fn store_at(&self, key: CacheKey, source: CacheKey) -> StoreAt {
        StoreAt { key, source, since: self.inner.cache.purge_generation(&source) }
    }

    /// Stores `entry` where `at` says, naming its source, unless the source was purged since the fill began.
    pub(super) async fn store(&self, at: StoreAt, entry: Entry) {
        self.inner.cache.store_unless_purged(at.key, sourced(entry, at.source), at.since).await;
    }
}
