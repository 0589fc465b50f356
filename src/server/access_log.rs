//! The access log: one `info` line per request, without secrets.
//!
//! A request URI carries two kinds of secret: the `sig=` of a signed URL (replayable for as long as the key is
//! valid) and the target's own query string (origins put access tokens and signed-URL parameters there). Logs
//! travel further than the service (aggregators, tickets, screenshots), so neither is written: the line names the
//! route (the options, without `sig`), the target's host and path, and the answer.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

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
    took: Duration,
    peer: SocketAddr,
) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    // A plain target (`http://host/path?query`, what signed links and most pages use) is sliced, not parsed: no
    // allocation on the hit path. A percent-encoded one is parsed as the handler parsed it.
    let parsed: Option<Target>;
    let (host, port, path) = match uri.query() {
        None | Some("") => ("-", None, "-"),
        Some(query) => match split_plain(query) {
            Some((host, path)) => (host, None, path),
            None => {
                parsed = Target::parse(query).ok();
                match parsed.as_ref().map(Target::url) {
                    Some(url) => (url.host_str().unwrap_or("-"), url.port(), url.path()),
                    None => ("-", None, "-"),
                }
            }
        },
    };
    tracing::info!(
        %method,
        route = %Route(uri.path()),
        target_host = %HostPort(host, port),
        target_path = path,
        status,
        x_cache = outcome.cache_status.map_or("-", |status| status.as_str()),
        error = outcome.error_code.map_or("-", ErrorCode::as_str),
        bytes,
        ms = took.as_secs_f64() * 1000.0,
        %peer,
        "request"
    );
}

/// The host (with its port, without userinfo) and the path (without query or fragment) of a target written as a
/// plain `http://` or `https://` URL; `None` for anything else (percent-encoded, odd case), which is parsed.
fn split_plain(raw: &str) -> Option<(&str, &str)> {
    let rest = raw.strip_prefix("http://").or_else(|| raw.strip_prefix("https://"))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host.is_empty() {
        return None;
    }
    let after = &rest[authority_end..];
    let path = &after[..after.find(['?', '#']).unwrap_or(after.len())];
    Some((host, if path.is_empty() { "/" } else { path }))
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
                if !pair.contains(char::is_control) {
                    f.write_str(pair)?;
                    continue;
                }
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
    fn plain_targets_are_sliced_without_userinfo_query_or_fragment() {
        assert_eq!(split_plain("http://h.example/a/b.jpg?token=x#f"), Some(("h.example", "/a/b.jpg")));
        assert_eq!(split_plain("https://u:pw@h.example:8443?q=1"), Some(("h.example:8443", "/")));
        assert_eq!(split_plain("http://h.example#x?y"), Some(("h.example", "/")));
        assert_eq!(split_plain("http%3A%2F%2Fh.example%2Fa.jpg"), None);
        assert_eq!(split_plain("http:///a.jpg"), None);
    }

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
