//! Stale answers without waiting. The first request for an expired key revalidates and, if upstream fails, waits
//! for that failure once; from then on, requests for the key answer `STALE` at once (within `--stale-if-error`)
//! while one background request retries upstream at most once per `--retry-interval`. Variants follow the same
//! rules with their own expired copies, so an outage neither re-runs transforms nor turns a cached variant into a
//! 502 when its original is gone. Upstream's `stale-while-revalidate=N` is the same thing without a failure: for
//! N seconds past expiry the entry answers at once and one background request revalidates it.

use mirage_cache::{CacheKey, Entry};

use super::purge::StoreAt;
use super::{CacheStatus, Pipeline, Served};
use crate::error::Error;
use crate::freshness::{self, unix_seconds};
use crate::request::{ImageRequest, Target, Variant};
use crate::upstream_health::StalePlan;

impl Pipeline {
    /// Whether an expired `entry` may still answer while upstream fails: up to `--stale-if-error` past its expiry
    /// (`now` in Unix seconds), unless upstream forbade it (`must-revalidate`, `proxy-revalidate`).
    pub(super) fn may_answer_stale(&self, entry: &Entry, now: u64) -> bool {
        freshness::may_serve_stale(&entry.meta().freshness)
            && now < entry.meta().expires_at.saturating_add(self.inner.freshness.stale_if_error.as_secs())
    }

    /// An expired original answered at once, if its key's last revalidation failed; starts the background retry
    /// when one is due. `None`: revalidate now and wait for it.
    pub(super) fn source_stale_at_once(&self, key: CacheKey, target: &Target, entry: &Entry) -> Option<Served> {
        self.stale_at_once(key, entry, || {
            let pipeline = self.clone();
            let request = ImageRequest::mirror(target.clone());
            let stale = entry.clone();
            tokio::spawn(async move {
                let leader = pipeline.clone();
                let fill = move || async move { leader.fill(&request, Some(stale)).await };
                // The outcome is in the cache (or in the retry schedule); nobody waits for it.
                let _ = pipeline.inner.fills.fill_once(key, fill).await;
            });
        })
    }

    /// An expired variant answered at once under the same rules as an original, unless its original is fresh
    /// in memory again (then the variant is renewed from it rather than answered stale).
    pub(super) async fn variant_stale_at_once(
        &self,
        key: CacheKey,
        request: &ImageRequest,
        variant: &Variant,
        entry: &Entry,
    ) -> Option<Served> {
        let source_key = ImageRequest::source_key_of(&request.target);
        let now = self.inner.clock.unix_now();
        if self.inner.cache.memory().get(&source_key).await.is_some_and(|original| original.is_fresh(now)) {
            return None;
        }
        self.stale_at_once(key, entry, || {
            let pipeline = self.clone();
            let request = request.clone();
            let variant = variant.clone();
            tokio::spawn(async move {
                let leader = pipeline.clone();
                let fill = move || async move { leader.fill_variant(&request, &variant, key).await };
                let _ = pipeline.inner.fills.fill_once(key, fill).await;
            });
        })
    }

    /// Within upstream's `stale-while-revalidate`, an expired entry answers at once and one background request
    /// revalidates it; past it, within `--stale-if-error`, it answers at once only after a failed revalidation.
    fn stale_at_once(&self, key: CacheKey, entry: &Entry, retry_in_background: impl FnOnce()) -> Option<Served> {
        let now = self.inner.clock.now();
        let seconds = unix_seconds(now);
        let meta = entry.meta();
        let while_revalidating = freshness::within_stale_while_revalidate(&meta.freshness, meta.expires_at, seconds);
        if !while_revalidating && !self.may_answer_stale(entry, seconds) {
            return None;
        }
        match self.inner.health.plan_stale(&key, now, while_revalidating) {
            StalePlan::Wait => None,
            StalePlan::Serve { retry } => {
                if retry {
                    retry_in_background();
                }
                Some(Served::new(entry.clone(), CacheStatus::Stale, true, seconds))
            }
        }
    }

    /// The variant's expired copy, when it may answer (the original answered stale, or upstream failed): the
    /// variant key's next requests then answer at once, as an original's do.
    pub(super) fn stale_variant(&self, key: CacheKey, stale: Option<Entry>) -> Option<Served> {
        let now = self.inner.clock.now();
        let entry = stale.filter(|entry| self.may_answer_stale(entry, unix_seconds(now)))?;
        self.inner.health.revalidation_failed(&key, now);
        Some(Served::new(entry, CacheStatus::Stale, true, unix_seconds(now)))
    }

    /// After the original failed with `error`: the variant's expired copy if upstream's failure allows stale
    /// answers, else the error. A final answer about the original (404, a refusal) is final for the variant
    /// too: its key stops answering stale at once, and the answer is remembered under it for as long as the
    /// original's, so its expired copy is never served again.
    pub(super) async fn stale_variant_or(
        &self,
        at: StoreAt,
        stale: Option<Entry>,
        error: Error,
    ) -> Result<Served, Error> {
        let key = at.key;
        if !error.allows_stale() {
            self.inner.health.revalidated(&key);
            let now = self.inner.clock.unix_now();
            return Err(match error {
                Error::UpstreamNotFound { cache_seconds } => {
                    if cache_seconds > 0 {
                        self.store(at, Entry::not_found(now, now.saturating_add(cache_seconds))).await;
                    }
                    error
                }
                error => self.remember_refusal(at, error, now).await,
            });
        }
        match self.stale_variant(key, stale) {
            Some(served) => {
                tracing::warn!(%error, "upstream failed; serving a stale variant");
                Ok(served)
            }
            None => Err(error),
        }
    }
}
