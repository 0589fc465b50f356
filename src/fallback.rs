//! `--fallback-image`: a placeholder answered instead of the error page when an image cannot be served because
//! of upstream or of the source image itself (see [`crate::error::ErrorCode::fallback_applies`]).
//!
//! The file is read, sniffed and decoded once, at start: a file that is missing, unreadable or not an image this
//! build can transform stops start-up, instead of failing on the first broken origin. Requests then get the
//! placeholder transformed as they asked (`pipeline::fallback` does that, through the same transform code, CPU
//! pool and cache as real images) and answered by [`answer`], the one place a fallback is served.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use mirage_cache::{CacheKey, Entry, Validators};
use sha2::{Digest, Sha256};

use crate::error::{Error, PublicError};
use crate::handler::Outcome;
use crate::pipeline::{CacheStatus, Pipeline};
use crate::request::{ImageRequest, TransformOptions, Variant};
use crate::respond::{self, Body};
use crate::sniff::ImageFormat;
use crate::transform::{self, Limits, OutputFormat};

/// The status a fallback answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackStatus {
    /// The status the error would have had (404, 502, ...): browsers render the image body anyway, and crawlers
    /// and CDNs still learn the image is broken.
    Error,
    /// Always this status (usually 200), for clients that drop bodies of error answers.
    Fixed(StatusCode),
}

impl FallbackStatus {
    /// Parses `--fallback-status`: `error`, or a status with a body: 2xx (but not 204/205, which have none),
    /// 4xx or 5xx. 1xx and 3xx would not show an image.
    pub fn parse(text: &str) -> Result<FallbackStatus, String> {
        if text.eq_ignore_ascii_case("error") {
            return Ok(FallbackStatus::Error);
        }
        let refused = || format!("{text:?} is not `error` nor a status with a body (2xx except 204/205, 4xx, 5xx)");
        let code: u16 = text.parse().map_err(|_| refused())?;
        let status = StatusCode::from_u16(code).map_err(|_| refused())?;
        let has_body = status.is_client_error() || status.is_server_error() || status.is_success();
        if !has_body || matches!(code, 204 | 205) {
            return Err(refused());
        }
        Ok(FallbackStatus::Fixed(status))
    }
}

/// The loaded fallback image and how it answers. Cheap to clone (the bytes are shared).
#[derive(Debug, Clone)]
pub struct Fallback {
    /// The file as loaded, as an entry: what a mirror request (no options) answers.
    original: Entry,
    /// SHA-256 of the file: names its variants in the cache, so they are shared by every failing target and
    /// change when the file does.
    digest: [u8; 32],
    /// The status of fallback answers.
    pub status: FallbackStatus,
    /// `Cache-Control: public, max-age=` this, on every fallback answer.
    pub ttl: Duration,
}

impl Fallback {
    /// Reads `path` and checks it is an image this build can transform within `limits`, by decoding it once.
    /// The error is one line naming the flag and the file.
    pub fn load(path: &Path, status: FallbackStatus, ttl: Duration, limits: &Limits) -> Result<Fallback, String> {
        let refuse = |why: String| format!("--fallback-image {}: {why}", path.display());
        let bytes = std::fs::read(path).map_err(|error| refuse(format!("cannot read it: {error}")))?;
        let format = ImageFormat::sniff(&bytes)
            .ok_or_else(|| refuse("not an image (expected JPEG, PNG, GIF or WebP)".to_owned()))?;
        // A real decode, not a header probe: a truncated file must fail here, not on the first broken origin.
        // A small PNG output keeps the check cheap whatever the file's size.
        let probe = TransformOptions::parse("width=16").map_err(|error| refuse(error.to_string()))?;
        transform::transform(&bytes, &probe, OutputFormat::Png, limits)
            .map_err(|error| refuse(format!("cannot be decoded: {error}")))?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        // Never expires: the file is the same until the process restarts.
        let original = Entry::image(format.media_type(), Bytes::from(bytes), 0, u64::MAX);
        Ok(Fallback { original, digest, status, ttl })
    }

    /// The file as loaded.
    pub fn original(&self) -> &Entry {
        &self.original
    }

    /// What the stored fallback variants name as their source: the file itself, which is never an entry (so
    /// `mirage cache stats` counts them as variants without original, and no purge of a real image touches them).
    pub fn source_key(&self) -> CacheKey {
        CacheKey::from_parts(&[b"fallback source", &self.digest])
    }

    /// The cache key of the fallback made as `variant` asks: the file's digest, the canonical options and the
    /// negotiated class. Its own namespace, so it can never collide with a real image's key.
    pub fn variant_key(&self, variant: &Variant) -> CacheKey {
        CacheKey::from_parts(&[
            b"fallback",
            &self.digest,
            variant.options.canonical().as_bytes(),
            variant.accepts.name().as_bytes(),
        ])
    }

    /// The validators a stored fallback variant carries: the file's digest token, as a real variant carries its
    /// original's (so `mirage cache stats` counts it among the variants).
    pub fn variant_validators(&self) -> Validators {
        Validators { etag: Some(self.original.etag_token()), last_modified: None }
    }

    /// The status of a fallback answer standing in for an error of status `error`.
    pub fn status_for(&self, error: StatusCode) -> StatusCode {
        match self.status {
            FallbackStatus::Error => error,
            FallbackStatus::Fixed(status) => status,
        }
    }
}

/// Answers `request` with the fallback image instead of `error`, when one is configured and the error is
/// upstream's or the source's; gives `error` back otherwise, or when the fallback itself cannot be made as asked
/// (then the client gets the real error page).
///
/// The one place a fallback is served, and counted (`mirage_fallback_responses_total{reason}`).
pub async fn answer(
    pipeline: &Pipeline,
    request: &ImageRequest,
    error: Error,
    head_only: bool,
) -> Result<(Response<Body>, Outcome), Error> {
    let Some(fallback) = pipeline.fallback_image() else { return Err(error) };
    let public: PublicError = error.public();
    if !public.code.fallback_applies() {
        return Err(error);
    }
    let served = match pipeline.fallback(fallback, request).await {
        Ok(served) => served,
        Err(fallback_error) => {
            // Overload and options the placeholder cannot take are the request's lot, not news: only our own
            // failures are worth a warning.
            let code = public.code.as_str();
            if fallback_error.public().status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::warn!(%fallback_error, code, "cannot make the fallback image; answering the error");
            } else {
                tracing::debug!(%fallback_error, code, "cannot make the fallback image; answering the error");
            }
            return Err(error);
        }
    };
    tracing::debug!(code = public.code.as_str(), %error, "answered with the fallback image");
    pipeline.metrics().fallback(public.code);
    let status = fallback.status_for(public.status);
    let response = respond::fallback(&served, status, public.code, fallback.ttl, head_only);
    let outcome =
        Outcome { cache_status: Some(CacheStatus::Fallback), error_code: Some(public.code), ..Outcome::default() };
    Ok((response, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_flag_takes_error_or_a_status_with_a_body() {
        assert_eq!(FallbackStatus::parse("error"), Ok(FallbackStatus::Error));
        assert_eq!(FallbackStatus::parse("200"), Ok(FallbackStatus::Fixed(StatusCode::OK)));
        assert_eq!(FallbackStatus::parse("404"), Ok(FallbackStatus::Fixed(StatusCode::NOT_FOUND)));
        assert_eq!(FallbackStatus::parse("503"), Ok(FallbackStatus::Fixed(StatusCode::SERVICE_UNAVAILABLE)));
        for bad in ["204", "205", "301", "304", "100", "600", "99", "ok", ""] {
            assert!(FallbackStatus::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
