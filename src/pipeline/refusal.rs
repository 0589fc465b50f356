//! Negative caching of refusals: which failures are remembered for `--negative-ttl`, and how a remembered one is
//! written into a `Refused` cache entry and read back as the same error (same status, same code).
//!
//! A refusal is a failure that asking again will not change within seconds: upstream said no (401, 403, 451 and
//! other 4xx except the transient 408/425/429), sent something that is not an image, a source over
//! `--max-source-bytes`, or a source that cannot be transformed (undecodable, unsupported, over a pixel or frame
//! limit). Timeouts, 5xx, broken connections and overload are not refusals: they are retried (and covered by
//! stale-if-error). 404/410 keep their own entry kind (`NotFound`), which clients may cache.
//!
//! The entry's `content_type` holds the error code and its arguments separated by `/`, e.g. `upstream_status/403`
//! or `source_too_many_pixels/9000/9000/50000000`: the code names the row of the error table, so the answer cannot
//! drift from the first one.

use mirage_cache::Entry;

use super::Pipeline;
use super::purge::StoreAt;
use crate::error::Error;
use crate::fetch::FetchError;
use crate::transform::TransformError;

/// The longest decoder text kept with an `undecodable_image` refusal (it is only ever logged).
const MAX_DETAIL: usize = 200;

impl Pipeline {
    /// Stores `error` where `at` says for `--negative-ttl` from `now` (Unix seconds) when it is a refusal; gives
    /// it back either way, for the caller to answer with.
    pub(super) async fn remember_refusal(&self, at: StoreAt, error: Error, now: u64) -> Error {
        let ttl = self.inner.freshness.negative_ttl.as_secs();
        if ttl > 0
            && let Some(reason) = remember(&error)
        {
            self.store(at, Entry::refused(reason, now, now.saturating_add(ttl))).await;
        }
        error
    }
}

/// The text to remember `error` by, or `None` when it is not a refusal and the next request should try again.
pub fn remember(error: &Error) -> Option<String> {
    let text = match error {
        Error::NotAnImage => "not_an_image".to_owned(),
        Error::Fetch(FetchError::UpstreamStatus(status)) if is_refusal_status(*status) => {
            format!("upstream_status/{status}")
        }
        Error::Fetch(FetchError::TooLarge { limit }) => format!("source_too_large/{limit}"),
        Error::Transform(transform) => match transform {
            TransformError::TooManyPixels { width, height, limit } => {
                format!("source_too_many_pixels/{width}/{height}/{limit}")
            }
            TransformError::OutputTooLarge { width, height, limit } => {
                format!("output_too_large/{width}/{height}/{limit}")
            }
            TransformError::TooManyFrames { frames, limit } => format!("too_many_frames/{frames}/{limit}"),
            TransformError::UnsupportedSource(format) => format!("unsupported_source/{format}"),
            TransformError::Undecodable(detail) => {
                let mut cut = detail.len().min(MAX_DETAIL);
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("undecodable_image/{}", &detail[..cut])
            }
            // Output support and the AVIF limit are the request's and this build's own, checked before any
            // pixel is decoded; an encoder failure may not repeat.
            TransformError::UnsupportedOutput(_) | TransformError::AvifTooLarge { .. } | TransformError::Encode(_) => {
                return None;
            }
        },
        _ => return None,
    };
    Some(text)
}

/// A 4xx that says "not for you" rather than "not now": remembered. 404/410 never get here (they are
/// `FetchError::NotFound`); 408, 425 and 429 are about timing and are retried.
fn is_refusal_status(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 425 | 429)
}

/// The error a remembered refusal answers with. Text that is not ours (a file from another version) becomes an
/// `upstream_status` 502, the most neutral refusal, rather than a panic or a guess at an image.
pub fn recall(text: &str) -> Error {
    let mut parts = text.split('/');
    let code = parts.next().unwrap_or_default();
    let mut number = || parts.next().and_then(|part| part.parse::<u64>().ok()).unwrap_or(0);
    let small = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
    match code {
        "not_an_image" => Error::NotAnImage,
        "upstream_status" => Error::Fetch(FetchError::UpstreamStatus(u16::try_from(number()).unwrap_or(0))),
        "source_too_large" => Error::Fetch(FetchError::TooLarge { limit: number() }),
        "source_too_many_pixels" => {
            let (width, height, limit) = (small(number()), small(number()), number());
            Error::Transform(TransformError::TooManyPixels { width, height, limit })
        }
        "output_too_large" => {
            let (width, height, limit) = (small(number()), small(number()), number());
            Error::Transform(TransformError::OutputTooLarge { width, height, limit })
        }
        "too_many_frames" => {
            let (frames, limit) = (small(number()), small(number()));
            Error::Transform(TransformError::TooManyFrames { frames, limit })
        }
        "unsupported_source" => Error::Transform(TransformError::UnsupportedSource(
            match text.split_once('/').map_or("", |(_, format)| format) {
                "AVIF" => "AVIF",
                "BMP" => "BMP",
                "ICO" => "ICO",
                _ => "such",
            },
        )),
        "undecodable_image" => Error::Transform(TransformError::Undecodable(format!(
            "remembered: {}",
            text.split_once('/').map_or("", |(_, detail)| detail)
        ))),
        _ => Error::Fetch(FetchError::UpstreamStatus(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_answer_again_with_the_same_status_code_and_message() {
        let refusals = [
            Error::NotAnImage,
            Error::Fetch(FetchError::UpstreamStatus(403)),
            Error::Fetch(FetchError::UpstreamStatus(401)),
            Error::Fetch(FetchError::UpstreamStatus(451)),
            Error::Fetch(FetchError::TooLarge { limit: 1024 }),
            Error::Transform(TransformError::TooManyPixels { width: 9000, height: 9000, limit: 50_000_000 }),
            Error::Transform(TransformError::OutputTooLarge { width: 9000, height: 1, limit: 10 }),
            Error::Transform(TransformError::TooManyFrames { frames: 9, limit: 5 }),
            Error::Transform(TransformError::UnsupportedSource("BMP")),
            Error::Transform(TransformError::Undecodable("bad Huffman table / é".to_owned())),
        ];
        for error in refusals {
            let text = remember(&error).unwrap_or_else(|| panic!("{error:?} is a refusal"));
            let again = recall(&text);
            assert_eq!(again.public(), error.public(), "{text}");
            assert_eq!(again.to_string().is_empty(), error.to_string().is_empty());
        }
        assert_eq!(recall("undecodable_image/x/y").to_string(), "cannot decode the source image: remembered: x/y");
    }

    #[test]
    fn transient_failures_are_not_remembered() {
        for error in [
            Error::Fetch(FetchError::UpstreamStatus(500)),
            Error::Fetch(FetchError::UpstreamStatus(503)),
            Error::Fetch(FetchError::UpstreamStatus(429)),
            Error::Fetch(FetchError::UpstreamStatus(408)),
            Error::Fetch(FetchError::Timeout),
            Error::Fetch(FetchError::Connect("refused".to_owned())),
            Error::Fetch(FetchError::Body("reset".to_owned())),
            Error::Overloaded,
            Error::Internal,
            Error::Transform(TransformError::Encode("oom".to_owned())),
        ] {
            assert_eq!(remember(&error), None, "{error:?}");
        }
    }

    #[test]
    fn foreign_text_is_a_neutral_502() {
        for text in ["", "image/jpeg", "upstream_status/notanumber", "source_too_many_pixels"] {
            let public = recall(text).public();
            assert!(public.status.as_u16() >= 400, "{text}: {public:?}");
        }
        assert_eq!(recall("what/ever").public().status.as_u16(), 502);
    }
}
