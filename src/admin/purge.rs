//! `POST /purge`: removes images (each original and every variant made from it) from the cache tiers, given their
//! URLs in any spelling the server accepts. The admin listener hands the request body to [`answer`]; `mirage
//! purge --cache-dir` shares the URL parsing ([`request::target_of_any_spelling`]) and the count.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::pipeline::Pipeline;
use crate::request::{self, ImageRequest};
use crate::respond::Body;

/// Largest request body read (the listener should stop reading past it); a bigger one is answered 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most URLs in one request; more are answered 413 (send them in several requests).
pub const MAX_URLS: usize = 10_000;

/// One purged source, as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// The canonical target URL.
    pub url: String,
    /// The CDN cache tag of the source (`mirage-` and 16 hex digits), for purging the CDN by tag.
    pub tag: String,
    /// Cache entries removed: the original and its variants, memory and disk counted once per entry.
    pub entries: usize,
    /// What the purge did in the fleet's shared cache, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedPurged>,
}

/// A purge in the shared cache, as answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPurged {
    /// Objects deleted from the store: the original, its variants, and a fill lease if one was held.
    pub objects: usize,
    /// Whether the purge record was written, so every other node drops its copies within `--purge-poll`. False
    /// when the store failed: then other nodes keep theirs until the purge is repeated.
    pub recorded: bool,
}

/// What a purge did: the JSON body of the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// One line per valid URL, in the order given.
    pub purged: Vec<Purged>,
    /// The lines that name no image URL, as given.
    pub invalid: Vec<String>,
}

impl Report {
    /// Entries removed in all (what a `mirage_purged_entries_total` counter adds).
    pub fn entries(&self) -> usize {
        self.purged.iter().map(|purged| purged.entries).sum()
    }
}

/// The JSON form of the body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBody {
    urls: Vec<String>,
}

/// Why a body was not read.
enum BodyError {
    TooLarge(String),
    Malformed(String),
}

/// The URLs of a body: JSON `{"urls": [...]}` when it starts with `{`, else one URL per line (blank lines and lines
/// starting with `#` are skipped).
fn urls_of(body: &[u8]) -> Result<Vec<String>, BodyError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::TooLarge(format!("body over {MAX_BODY_BYTES} bytes")));
    }
    let text = std::str::from_utf8(body).map_err(|_| BodyError::Malformed("body is not UTF-8".to_owned()))?;
    let urls: Vec<String> = if text.trim_start().starts_with('{') {
        let json: JsonBody = serde_json::from_str(text)
            .map_err(|error| BodyError::Malformed(format!("expected {{\"urls\": [...]}}: {error}")))?;
        json.urls
    } else {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    if urls.len() > MAX_URLS {
        return Err(BodyError::TooLarge(format!("more than {MAX_URLS} URLs")));
    }
    Ok(urls)
}

/// Purges each of `urls` (any spelling the server accepts) in order; what could not be read as an image URL is
/// listed as invalid. A source named twice is removed once (the second counts 0 entries).
pub async fn purge_urls(pipeline: &Pipeline, urls: &[String]) -> Report {
    let mut report = Report::default();
    for text in urls {
        match request::target_of_any_spelling(text) {
            Ok(target) => {
                let outcome = pipeline.purge(&target).await;
                let tag = ImageRequest::source_key_of(&target).tag();
                let shared =
                    outcome.shared.map(|shared| SharedPurged { objects: shared.objects, recorded: shared.recorded });
                report.purged.push(Purged {
                    url: target.canonical().to_owned(),
                    tag,
                    entries: outcome.entries,
                    shared,
                });
            }
            Err(_) => report.invalid.push(text.clone()),
        }
    }
    report
}

/// The answer to `POST /purge` with `body`: 200 and the JSON [`Report`]; 413 when the body is over
/// [`MAX_BODY_BYTES`] or names more than [`MAX_URLS`]; 400 when it is neither UTF-8 lines nor the JSON form.
/// Authentication is the listener's business, before this is called.
pub async fn answer(pipeline: &Pipeline, body: Bytes) -> Response<Body> {
    let urls = match urls_of(&body) {
        Ok(urls) => urls,
        Err(BodyError::TooLarge(message)) => return json(StatusCode::PAYLOAD_TOO_LARGE, &Problem { error: message }),
        Err(BodyError::Malformed(message)) => return json(StatusCode::BAD_REQUEST, &Problem { error: message }),
    };
    let report = purge_urls(pipeline, &urls).await;
    tracing::info!(urls = urls.len(), entries = report.entries(), invalid = report.invalid.len(), "purged");
    json(StatusCode::OK, &report)
}

/// The body of a 400 or 413.
#[derive(Serialize)]
struct Problem {
    error: String,
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Serialising plain strings and numbers cannot fail; an empty object is a safe fallback all the same.
    let mut text = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    let length = text.len();
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_as_lines_or_json_within_bounds() {
        let lines = urls_of(b"http://h/a.jpg\n\n# a comment\n  https://h/b.png  \r\n").ok().unwrap();
        assert_eq!(lines, ["http://h/a.jpg", "https://h/b.png"]);
        let json = urls_of(br#" {"urls": ["http://h/a.jpg", "x"]}"#).ok().unwrap();
        assert_eq!(json, ["http://h/a.jpg", "x"]);
        assert!(matches!(urls_of(br#"{"url": ["http://h/a.jpg"]}"#), Err(BodyError::Malformed(_))));
        assert!(matches!(urls_of(b"\xff\xfe"), Err(BodyError::Malformed(_))));
        let many = "http://h/a.jpg\n".repeat(MAX_URLS + 1);
        assert!(matches!(urls_of(many.as_bytes()), Err(BodyError::TooLarge(_))));
        let big = vec![b'a'; MAX_BODY_BYTES + 1];
        assert!(matches!(urls_of(&big), Err(BodyError::TooLarge(_))));
    }
}
