//! The cluster-wide fill lease: one upstream fetch per source across the fleet.
//!
//! Before going upstream for a source, a node writes `{source}/lease` create-only (`PutMode::Create`, sent as
//! `If-None-Match: *`), holding its node id and an expiry of `--fetch-timeout`. The store lets exactly one writer
//! win. The others wait for the winner's entry with short polls, bounded by the lease's expiry; a lease that is
//! released without an entry (the fetch failed, or the answer may not be kept) lets them claim again, and an
//! expired one (its holder died) is taken over. The lease of an original is released once the write of the
//! original has landed, so a waiter finds the object and never a released lease with nothing behind it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions};

use super::stats::LeaseResult;
use super::{SharedInner, SharedTier, millis, unix_millis};
use crate::key::CacheKey;
use crate::meta::Entry;

/// First wait between two polls of a waiting node; doubled up to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(25);
/// Longest wait between two polls.
const MAX_POLL: Duration = Duration::from_millis(250);
/// Waited past a lease's expiry before taking it over: clocks of different nodes are not exactly in step.
const EXPIRY_GRACE: Duration = Duration::from_millis(500);

/// The leases this node holds, by source (weak: a lease is released when its last holder drops it).
pub(super) type Held = HashMap<CacheKey, Weak<HeldLease>>;

/// What claiming a lease gave.
#[derive(Debug)]
pub enum LeaseClaim {
    /// This node fetches; the lease is released when the last clone is dropped.
    Won(FillLease),
    /// Another node fetches, until the given Unix milliseconds at the latest.
    Lost {
        /// When the other node's lease expires.
        expires_at: u64,
    },
    /// No lease could be had (the store is skipped or failing, or lacks create-only writes): fetch per node.
    Unavailable,
}

/// How waiting for another node's fill ended.
#[derive(Debug)]
pub enum Waited {
    /// Its entry is in the store, fresh at the time given.
    Filled(Entry),
    /// Its lease is gone without an entry, or expired, or the store failed: claim again (or fetch).
    Released,
}

/// A held fill lease. Cheap to clone; released (its object deleted) when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct FillLease(#[expect(dead_code, reason = "held for its Drop")] Arc<HeldLease>);

/// The lease object this node wrote, deleted on drop.
#[derive(Debug)]
pub(super) struct HeldLease {
    tier: Weak<SharedInner>,
    source: CacheKey,
    path: Path,
    body: Bytes,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        let Some(tier) = self.tier.upgrade() else { return };
        {
            let mut held = tier.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.get(&self.source).is_some_and(|lease| lease.strong_count() == 0) {
                held.remove(&self.source);
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (path, ours) = (self.path.clone(), self.body.clone());
        runtime.spawn(async move {
            // Only our own lease: one that expired may have been taken over by another node since.
            let read = tokio::time::timeout(tier.timeout, async { tier.store.get(&path).await?.bytes().await });
            if let Ok(Ok(current)) = read.await
                && current == ours
            {
                let _ = tokio::time::timeout(tier.timeout, tier.store.delete(&path)).await;
            }
        });
    }
}

/// The lease this node holds for `source`, if any (for the write of its original to carry).
pub(super) fn held(tier: &SharedInner, source: &CacheKey) -> Option<FillLease> {
    let held = tier.held.lock().unwrap_or_else(PoisonError::into_inner);
    held.get(source).and_then(Weak::upgrade).map(FillLease)
}

/// The lease object's body: who holds it and until when (Unix milliseconds).
fn lease_body(node: &str, expires_at: u64) -> Bytes {
    Bytes::from(format!("{{\"node\":{node:?},\"expires_at\":{expires_at}}}"))
}

/// The expiry read back from a lease object; `None` for one that is not ours to read (then it counts as expired).
fn lease_expiry(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let (_, rest) = text.split_once("\"expires_at\":")?;
    rest.trim_end_matches(['}', ' ', '\n']).trim().parse().ok()
}

impl SharedTier {
    /// Claims the fill lease of `source`: a create-only write of its lease object.
    pub async fn claim_lease(&self, source: &CacheKey) -> LeaseClaim {
        let inner = &self.inner;
        if !self.leases_supported() || !inner.breaker.allows() {
            inner.stats.leased(LeaseResult::Unsupported);
            return LeaseClaim::Unavailable;
        }
        let path = inner.layout.lease(source);
        let mut took_over = false;
        // Twice at most: a lease released or expired between our write and our read is claimed once more.
        for _ in 0..2 {
            let expires_at = unix_millis().saturating_add(millis(inner.options.lease_ttl));
            let body = lease_body(&inner.node, expires_at);
            let create = inner.store.put_opts(&path, body.clone().into(), PutOptions::from(PutMode::Create));
            match tokio::time::timeout(inner.timeout, create).await {
                Ok(Ok(_)) => {
                    inner.breaker.succeeded();
                    inner.stats.leased(if took_over { LeaseResult::TakenOver } else { LeaseResult::Won });
                    let lease = Arc::new(HeldLease { tier: Arc::downgrade(inner), source: *source, path, body });
                    let mut held = inner.held.lock().unwrap_or_else(PoisonError::into_inner);
                    held.insert(*source, Arc::downgrade(&lease));
                    return LeaseClaim::Won(FillLease(lease));
                }
                Ok(Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })) => {
                    inner.breaker.succeeded();
                }
                Ok(Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. })) => {
                    self.leases_unsupported();
                    inner.stats.leased(LeaseResult::Unsupported);
                    return LeaseClaim::Unavailable;
                }
                Ok(Err(error)) => return self.lease_failed(&error),
                Err(_) => return self.lease_failed(&"timed out"),
            }
            // Someone holds it: until when?
            match self.fetch_object(&path).await {
                Ok(Some(current)) => match lease_expiry(&current) {
                    Some(expires_at) if expires_at.saturating_add(millis(EXPIRY_GRACE)) > unix_millis() => {
                        inner.stats.leased(LeaseResult::Lost);
                        return LeaseClaim::Lost { expires_at };
                    }
                    // Expired (its holder died or hung) or unreadable: take it over.
                    _ => {
                        let _ = tokio::time::timeout(inner.timeout, inner.store.delete(&path)).await;
                        took_over = true;
                    }
                },
                // Released between our write and our read: claim again.
                Ok(None) => {}
                Err(()) => {
                    inner.stats.leased(LeaseResult::Unsupported);
                    return LeaseClaim::Unavailable;
                }
            }
        }
        inner.stats.leased(LeaseResult::Unsupported);
        LeaseClaim::Unavailable
    }

    fn lease_failed(&self, error: &dyn std::fmt::Display) -> LeaseClaim {
        self.inner.breaker.failed("lease", error);
        self.inner.stats.leased(LeaseResult::Unsupported);
        LeaseClaim::Unavailable
    }

    /// Waits for the entry of `source` that the lease holder is fetching: polls the entry (and the lease, to learn
    /// when it is gone) with short, growing pauses, until the entry is there and fresh at `now` (Unix seconds),
    /// the lease is gone, or it has expired (`expires_at`, Unix milliseconds).
    pub async fn wait_for_fill(&self, source: &CacheKey, expires_at: u64, now: u64) -> Waited {
        let lease = self.inner.layout.lease(source);
        let give_up = expires_at.saturating_add(millis(EXPIRY_GRACE));
        let mut pause = FIRST_POLL;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
            match self.read(source, source).await {
                (Some(entry), _) if entry.is_fresh(now) => return Waited::Filled(entry),
                (_, super::LookupResult::Error | super::LookupResult::Skipped) => return Waited::Released,
                _ => {}
            }
            if unix_millis() >= give_up {
                return Waited::Released;
            }
            match tokio::time::timeout(self.inner.timeout, self.inner.store.head(&lease)).await {
                Ok(Err(object_store::Error::NotFound { .. })) => {
                    // Gone: the entry may have landed just before the lease went.
                    return match self.read(source, source).await {
                        (Some(entry), _) if entry.is_fresh(now) => Waited::Filled(entry),
                        _ => Waited::Released,
                    };
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return Waited::Released,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_body_round_trips_its_expiry() {
        assert_eq!(lease_expiry(&lease_body("host-1-abc", 1_700_000_000_123)), Some(1_700_000_000_123));
        assert_eq!(lease_expiry(b"garbage"), None);
    }
}
