//! Upstream fetch: one image URL from the origin, with SSRF checks on every hop, timeouts and a byte cap.
//!
//! The rules that keep a public image proxy from being turned against its own network live here:
//! every address contacted is checked by [`NetworkPolicy`] (IP literals before the request, names inside the DNS
//! resolver so the connection goes to exactly the checked addresses), redirects are followed by hand so each hop
//! is checked again, no proxy from the environment is used, and no client header is ever forwarded.

mod hostrules;
mod netpolicy;
mod resolver;
#[cfg(test)]
mod tests;

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderMap, HeaderValue};
use url::Url;

pub use hostrules::{HostPattern, HostRefusal, HostRules, PatternError};
pub use netpolicy::{ForbiddenAddress, NetworkPolicy};
use resolver::PolicyResolver;
pub use resolver::{LookupFuture, NameLookup, SystemLookup};

/// The `Accept` sent upstream: the most widely decodable representation. One copy is stored and served to every
/// client and made into every variant, so it must be one every browser and our decoders read: JPEG, PNG and GIF
/// first, any other image only when the origin has nothing else, anything at all last (a strict origin would
/// otherwise answer 406). AVIF and WebP are not named, not even with a low `q`: the negotiating origins we front
/// (Cloudinary `f_auto`, imgix `auto=format`, Cloudflare Polish, Next.js) pick them whenever `Accept` mentions
/// them, whatever the weight.
const ACCEPT_IMAGES: &str = "image/jpeg,image/png,image/gif;q=0.9,image/*;q=0.5,*/*;q=0.1";

/// How the fetcher talks to upstream servers.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The `User-Agent` sent upstream.
    pub user_agent: String,
    /// Limit for establishing one TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit for the whole fetch, all redirect hops and the body included.
    pub total_timeout: Duration,
    /// Largest body accepted, declared or streamed.
    pub max_body_bytes: u64,
    /// Most redirects followed before giving up.
    pub max_redirects: usize,
    /// Which addresses may be contacted.
    pub network: NetworkPolicy,
    /// Which hosts and ports may be fetched (`--allow-host`, `--deny-host`, `--allow-port`), checked on every hop.
    pub hosts: HostRules,
    /// How host names become addresses (checked against `network` before any connection): the system
    /// resolver unless a test plays DNS.
    pub name_lookup: Arc<dyn NameLookup>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            user_agent: concat!("mirage/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(20),
            max_body_bytes: 25 * 1024 * 1024,
            max_redirects: 5,
            network: NetworkPolicy::default(),
            hosts: HostRules::default(),
            name_lookup: Arc::new(SystemLookup),
        }
    }
}

/// Validators of a cached copy (`ETag` sent as `If-None-Match`, `Last-Modified` as `If-Modified-Since`), so the
/// origin can answer 304 instead of the whole image: the cache's own type, the one stored with each entry.
pub use mirage_cache::Validators;

/// The outcome of a successful fetch.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// A 200 answer with its whole body.
    Full(Upstream),
    /// A 304 answer to a conditional request: the cached copy is still good.
    NotModified(UpstreamHeaders),
}

/// A fetched upstream image.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The caching-relevant response headers.
    pub headers: UpstreamHeaders,
    /// The body, exactly as sent (no decompression).
    pub body: Bytes,
    /// The URL that answered, after redirects (without userinfo).
    pub final_url: Url,
}

/// The response headers the caller needs for content typing and cache freshness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// `Cache-Control`, every field line joined with ", " (RFC 9110 5.3), so no directive on a later line is lost.
    pub cache_control: Option<String>,
    /// `Expires`.
    pub expires: Option<String>,
    /// `Date`.
    pub date: Option<String>,
    /// `Age`.
    pub age: Option<String>,
    /// `Vary` without `Accept-Encoding` (every line, one ", "-separated list): the request headers upstream chose
    /// this representation by. Mirage sends the same headers on every fetch, so the answer holds for all of them;
    /// only `*` (never matches, RFC 9111 4.1) keeps it out of the cache.
    pub vary: Option<String>,
}

impl UpstreamHeaders {
    /// Picks the headers we keep; values that are not visible ASCII are dropped rather than guessed at.
    fn from_map(map: &HeaderMap) -> Self {
        let get = |name: header::HeaderName| map.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Self {
            content_type: get(header::CONTENT_TYPE),
            etag: get(header::ETAG),
            last_modified: get(header::LAST_MODIFIED),
            cache_control: joined_lines(map, header::CACHE_CONTROL),
            expires: get(header::EXPIRES),
            date: get(header::DATE),
            age: get(header::AGE),
            vary: vary_of(map),
        }
    }
}

/// A list header (RFC 9110 5.3): every field line, joined with ", "; `None` when there is none. Bytes that are not
/// UTF-8 become U+FFFD rather than dropping the line: a `Cache-Control` line with a stray Latin-1 byte in one
/// extension still says `no-store` (skipping it would store what upstream forbade), and the parser ignores the
/// directive the byte is in.
fn joined_lines(map: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let mut lines = map.get_all(name).iter().map(|value| String::from_utf8_lossy(value.as_bytes()));
    let first = lines.next()?.trim().to_owned();
    Some(lines.fold(first, |mut joined, line| {
        joined.push_str(", ");
        joined.push_str(line.trim());
        joined
    }))
}

/// `Vary` without `Accept-Encoding` (ours, always `identity`, saying nothing about the image); `None` when
/// nothing else is named. Vary is a list of tokens, so splitting on commas is exact here.
fn vary_of(map: &HeaderMap) -> Option<String> {
    let all = joined_lines(map, header::VARY)?;
    let names: Vec<&str> = all
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.eq_ignore_ascii_case("accept-encoding"))
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// Why a fetch failed. Messages are one line, for the log: they may name resolved addresses and upstream
/// statuses, so clients only ever see `crate::error::Error::public`'s text.
///
/// `Clone` because one result is shared among all requests coalesced onto the same fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The target or a redirect hop is not allowed (forbidden address or scheme).
    #[error("{0}")]
    Forbidden(String),
    /// Upstream answered 404 or 410.
    #[error("upstream answered {0}")]
    NotFound(u16),
    /// Upstream answered with another status we do not serve.
    #[error("upstream answered {0}")]
    UpstreamStatus(u16),
    /// The body is larger than allowed, by declaration or while streaming.
    #[error("source image is larger than {limit} bytes")]
    TooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// Connecting or the whole fetch took too long.
    #[error("upstream did not answer in time")]
    Timeout,
    /// More redirects than allowed; carries the limit.
    #[error("upstream redirected more than {0} times")]
    TooManyRedirects(usize),
    /// The target or a redirect hop is refused by the operator's host or port rules.
    #[error(transparent)]
    HostRule(#[from] HostRefusal),
    /// A redirect without a usable `Location`.
    #[error("bad redirect from upstream: {0}")]
    BadRedirect(String),
    /// DNS failure, refused or reset connection, TLS failure.
    #[error("could not connect to upstream: {0}")]
    Connect(String),
    /// The body broke off or was shorter than declared.
    #[error("error while reading the upstream body: {0}")]
    Body(String),
}

/// The fetch client could not be built (a startup error, not a per-request one).
#[derive(Debug, thiserror::Error)]
#[error("could not build the upstream HTTP client: {0}")]
pub struct FetchBuildError(String);

/// Fetches images from upstream; cheap to share (`Arc` it or clone it: the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: Arc<FetchConfig>,
}

impl Fetcher {
    /// Builds the HTTP client; fails only on a bad configuration such as an invalid `User-Agent`.
    pub fn new(config: FetchConfig) -> Result<Fetcher, FetchBuildError> {
        // reqwest is built without a default crypto provider and panics without one; `main` installs it too, and
        // a second install only reports "already installed", which is fine to ignore.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = PolicyResolver::with_lookup(Arc::new(config.network.clone()), config.name_lookup.clone());
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .map_err(|_| FetchBuildError("user agent is not a valid header value".to_owned()))?;
        let client = reqwest::Client::builder()
            // An environment proxy would resolve names itself and bypass the checking resolver.
            .no_proxy()
            // Redirects are followed by hand so every hop gets the scheme and address checks.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .dns_resolver(Arc::new(resolver))
            .connect_timeout(config.connect_timeout)
            .user_agent(user_agent)
            // One request, one connection attempt: keeps upstream load and our connection counts predictable.
            .retry(reqwest::retry::never())
            .build()
            .map_err(|e| FetchBuildError(root_cause(&e)))?;
        Ok(Fetcher { client, config: Arc::new(config) })
    }

    /// The configuration this fetcher was built with.
    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Checks `url` against the host and port rules only (no I/O): lets callers refuse a target before even
    /// looking in the cache, so a host denied after its images were cached is no longer served.
    pub fn check_host_rules(&self, url: &Url) -> Result<(), FetchError> {
        Ok(self.config.hosts.check(url)?)
    }

    /// Fetches `url`, following redirects; with `validators`, asks conditionally and may get `NotModified`.
    pub async fn fetch(&self, url: &Url, validators: Option<&Validators>) -> Result<Fetched, FetchError> {
        tokio::time::timeout(self.config.total_timeout, self.fetch_hops(url, validators))
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    /// The redirect loop; runs under the total timeout.
    async fn fetch_hops(&self, url: &Url, validators: Option<&Validators>) -> Result<Fetched, FetchError> {
        let mut current = url.clone();
        let mut redirects = 0usize;
        loop {
            // reqwest turns userinfo into an Authorization header; credentials in a URL (first or from a
            // redirect) are never sent upstream, nor kept in `final_url`.
            strip_credentials(&mut current);
            self.check_target(&current, redirects > 0)?;
            self.config.hosts.check(&current)?;
            let response = self.send(&current, validators).await?;
            let status = response.status().as_u16();
            match status {
                200 => {
                    let headers = UpstreamHeaders::from_map(response.headers());
                    let body = read_body(response, self.config.max_body_bytes).await?;
                    return Ok(Fetched::Full(Upstream { headers, body, final_url: current }));
                }
                301 | 302 | 303 | 307 | 308 => {
                    if redirects >= self.config.max_redirects {
                        return Err(FetchError::TooManyRedirects(self.config.max_redirects));
                    }
                    current = redirect_target(&current, response.headers())?;
                    redirects += 1;
                }
                304 if validators.is_some() => {
                    return Ok(Fetched::NotModified(UpstreamHeaders::from_map(response.headers())));
                }
                404 | 410 => return Err(FetchError::NotFound(status)),
                _ => return Err(FetchError::UpstreamStatus(status)),
            }
        }
    }

    /// Checks a hop before any connection: the scheme, and the address when the host is an IP literal (the
    /// resolver never sees literals, so this is their only check).
    fn check_target(&self, url: &Url, is_redirect: bool) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            let what = if is_redirect { "redirect to non-http scheme" } else { "target scheme is not http or https" };
            return Err(FetchError::Forbidden(what.to_owned()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(FetchError::Forbidden("target has no host".to_owned())),
        };
        self.config.network.check(ip).map_err(|f| FetchError::Forbidden(f.to_string()))
    }

    /// Sends one GET for one hop.
    async fn send(&self, url: &Url, validators: Option<&Validators>) -> Result<reqwest::Response, FetchError> {
        let mut request = self
            .client
            .get(url.clone())
            .header(header::ACCEPT, ACCEPT_IMAGES)
            // We store and serve the bytes as sent; a compressed transfer encoding would need decoding first.
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(v) = validators {
            if let Some(etag) = v.etag.as_deref().and_then(header_value) {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = v.last_modified.as_deref().and_then(header_value) {
                request = request.header(header::IF_MODIFIED_SINCE, date);
            }
        }
        request.send().await.map_err(map_send_error)
    }
}

/// Removes username, password and fragment; none of them is part of what the origin should see.
fn strip_credentials(url: &mut Url) {
    // These only fail for URLs that cannot have credentials at all (no host), which then have none to strip.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
}

/// A cached validator that cannot be a header value is skipped: the request is then unconditional.
fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Resolves a redirect's `Location` against the URL that sent it.
fn redirect_target(current: &Url, headers: &HeaderMap) -> Result<Url, FetchError> {
    let location = headers
        .get(header::LOCATION)
        .ok_or_else(|| FetchError::BadRedirect("redirect without a Location header".to_owned()))?
        .to_str()
        .map_err(|_| FetchError::BadRedirect("Location header is not valid text".to_owned()))?;
    current.join(location).map_err(|_| FetchError::BadRedirect("Location header is not a valid URL".to_owned()))
}

/// Reads the body under the byte cap, refusing a too-large declaration before reading anything.
async fn read_body(mut response: reqwest::Response, limit: u64) -> Result<Bytes, FetchError> {
    let declared = response.content_length();
    if declared.is_some_and(|len| len > limit) {
        return Err(FetchError::TooLarge { limit });
    }
    // Pre-size from the declaration, but never beyond the limit: the header is the sender's word, not a fact.
    const UNDECLARED_INITIAL: u64 = 64 * 1024;
    let initial = declared.unwrap_or(UNDECLARED_INITIAL).min(limit);
    let mut body = BytesMut::with_capacity(usize::try_from(initial).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(map_body_error)? {
        let total = body.len() as u64 + chunk.len() as u64;
        if total > limit {
            return Err(FetchError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    // hyper already reports a connection closed early; this guards the invariant should that ever change.
    if declared.is_some_and(|len| (body.len() as u64) < len) {
        return Err(FetchError::Body("body is shorter than its Content-Length".to_owned()));
    }
    Ok(exact(body))
}

/// The body in an allocation of exactly its length. A body that grew while streaming (no Content-Length) holds
/// up to twice its length in capacity; the cache weighs entries by length and keeps them for hours, so the
/// spare capacity would be memory the budget never sees. One copy at the end is cheaper than that.
fn exact(body: BytesMut) -> Bytes {
    if body.capacity() == body.len() { body.freeze() } else { Bytes::copy_from_slice(&body) }
}

/// Classifies an error from sending a request (connecting, TLS, reading the response head).
#[expect(clippy::needless_pass_by_value, reason = "used as `map_err(map_send_error)`")]
fn map_send_error(err: reqwest::Error) -> FetchError {
    // The resolver's refusal arrives wrapped by reqwest and hyper; it must stay a 403, not become a 502.
    if let Some(forbidden) = find_in_chain::<ForbiddenAddress>(&err) {
        return FetchError::Forbidden(forbidden.to_string());
    }
    if err.is_timeout() {
        return FetchError::Timeout;
    }
    if err.is_body() || err.is_decode() {
        return FetchError::Body(root_cause(&err));
    }
    FetchError::Connect(root_cause(&err))
}

/// Classifies an error while streaming the body.
#[expect(clippy::needless_pass_by_value, reason = "used as `map_err(map_body_error)`")]
fn map_body_error(err: reqwest::Error) -> FetchError {
    if err.is_timeout() {
        return FetchError::Timeout;
    }
    FetchError::Body(root_cause(&err))
}

/// Finds an error of type `T` anywhere in the source chain, looking inside `io::Error` wrappers too (their
/// `source()` skips the wrapped error itself).
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(found) =
            e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|inner| inner.downcast_ref::<T>())
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// The innermost cause's message: reqwest's own top-level message includes the URL, which may carry secrets
/// from the query string and is not ours to echo.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    // No inner cause: say only what kind of failure it was.
    let mut message = if std::ptr::addr_eq(cause, err) {
        "request failed".to_owned()
    } else {
        cause.to_string().replace(['\r', '\n'], " ")
    };
    const MAX_MESSAGE: usize = 200;
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}
