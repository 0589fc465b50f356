//! The fallback image made as a request asks: the file as loaded for a mirror, else a variant of it made through
//! the same transform code and CPU pool as real images, cached under its own key (see `Fallback::variant_key`)
//! with one fill per key, so a thousand broken `width=300` images cost one transform.

use mirage_cache::{Entry, Lookup};

use super::{CacheStatus, Pipeline, Served, flatten};
use crate::error::Error;
use crate::fallback::Fallback;
use crate::request::{ImageRequest, Variant};

impl Pipeline {
    /// `fallback` made as `request` asks. An error here (the options cannot be applied to the placeholder, or
    /// the CPU pool is full) means the client gets the original error instead.
    pub async fn fallback(&self, fallback: &Fallback, request: &ImageRequest) -> Result<Served, Error> {
        let now = self.inner.clock.unix_now();
        let Some(variant) = &request.variant else {
            return Ok(Served::new(fallback.original().clone(), CacheStatus::Fallback, true, now));
        };
        let key = fallback.variant_key(variant);
        if let Lookup::Fresh(entry, _) = self.inner.cache.lookup(&key, now).await {
            let mut served = Served::new(entry, CacheStatus::Fallback, true, now);
            served.varies_on_accept = variant.varies_on_accept();
            return Ok(served);
        }
        let pipeline = self.clone();
        let fallback = fallback.clone();
        let owned: Variant = variant.clone();
        let filled = self
            .inner
            .fills
            .fill_once(key, move || async move { pipeline.fill_fallback(&fallback, &owned).await })
            .await;
        let mut served = flatten(filled)?;
        served.varies_on_accept = variant.varies_on_accept();
        Ok(served)
    }

    /// The leader's work for one fallback variant: transform the placeholder, store the result.
    async fn fill_fallback(&self, fallback: &Fallback, variant: &Variant) -> Result<Served, Error> {
        let encoded = self.transform(fallback.original().body().clone(), variant).await?;
        let now = self.inner.clock.unix_now();
        // The key names the file's digest: the stored variant is right for as long as it is kept, so it lives as
        // long as any cached image may (the LRU drops it when unused). Clients are told `--fallback-ttl` instead.
        let expires_at = now.saturating_add(self.inner.freshness.max_ttl.as_secs());
        let entry = Entry::image(encoded.format.media_type(), encoded.bytes.into(), now, expires_at)
            .with_validators(fallback.variant_validators())
            .with_source(fallback.source_key());
        self.inner.cache.store(fallback.variant_key(variant), entry.clone()).await;
        Ok(Served::new(entry, CacheStatus::Fallback, true, now))
    }
}
