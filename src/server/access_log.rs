//! The access log: one `info` line per request, without secrets.
//!
//! A request URI carries two kinds of secret: the `sig=` of a signed URL (replayable for as long as the key is
//! valid) and the target's own query string (origins put access tokens and signed-URL parameters there). Logs
//! travel further than the service (aggregators, tickets, screenshots), so neither is written: the line names the
//! route (the options, without `sig`), the target's host and path, and the answer.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use http::{Method, Uri};
use percent_encoding::percent_decode_str;

use crate::error::ErrorCode;
use crate::handler::Outcome;
use crate::request::{SIGNATURE_KEY, Target};

/// Writes the access-log line of one answered request.
pub(super) fn record(
    method: &Method,
    uri: &Uri,
    status: u16,
    outcome: Outcome,
    bytes: u64,
    started: Instant,
    peer: SocketAddr,
) {
    // Parsing the target costs an allocation: only when the line is written.
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let target = uri.query().and_then(|query| Target::parse(query).ok());
    let url = target.as_ref().map(Target::url);
    let host = url.and_then(|url| url.host_str()).unwrap_or("-");
    let port = url.and_then(url::Url::port);
    tracing::info!(
        %method,
        route = %Route(uri.path()),
        target_host = %HostPort(host, port),
        target_path = url.map_or("-", url::Url::path),
        status,
        x_cache = outcome.cache_status.map_or("-", |status| status.as_str()),
        error = outcome.error_code.map_or("-", ErrorCode::as_str),
        bytes,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        %peer,
        "request"
    );
}

/// A host with its port when the URL names one.
struct HostPort<'a>(&'a str, Option<u16>);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(port) => write!(f, "{}:{port}", self.0),
            None => f.write_str(self.0),
        }
    }
}

/// The request path with every `sig=...` option left out, percent-decoded, control characters escaped (one log
/// line stays one line): `/sig=S,width=300/` is logged as `/width=300/`, a signed mirror `/sig=S/` as `/`.
struct Route<'a>(&'a str);

impl fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_signature = |pair: &str| {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            key.trim().eq_ignore_ascii_case(SIGNATURE_KEY)
        };
        for (index, segment) in self.0.split('/').enumerate() {
            let decoded = percent_decode_str(segment).decode_utf8_lossy();
            // A segment that was nothing but the signature goes with its slash: `/sig=S/` is `/`.
            if !decoded.is_empty() && decoded.split(',').all(is_signature) {
                continue;
            }
            if index > 0 {
                f.write_str("/")?;
            }
            let mut first = true;
            for pair in decoded.split(',').filter(|pair| !is_signature(pair)) {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                for c in pair.chars() {
                    if c.is_control() { write!(f, "{}", c.escape_default())? } else { write!(f, "{c}")? }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_lose_their_signatures() {
        let route = |path: &str| Route(path).to_string();
        assert_eq!(route("/"), "/");
        assert_eq!(route("/healthz"), "/healthz");
        assert_eq!(route("/sig=abc,width=300/"), "/width=300/");
        assert_eq!(route("/width=300,SIG=abc,h=2/"), "/width=300,h=2/");
        assert_eq!(route("/sig%3Dabc%2Cwidth%3D300/"), "/width=300/");
        assert_eq!(route("/sig=abc/"), "/");
        assert_eq!(route("/a%0Ab/x/sig=q"), "/a\\nb/x");
    }
}
