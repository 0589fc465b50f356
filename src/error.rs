//! The one error type of a request, and the ONLY place where failures become HTTP statuses and public messages.

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;

use crate::fetch::{FetchError, HostRefusal};
use crate::request::{RequestError, TargetError};
use crate::signing::SignatureError;
use crate::transform::TransformError;

/// Everything that can end a request without an image.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The target URL or the options could not be understood.
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    /// No route has this path.
    #[error("no such route")]
    NoRoute,
    /// The URL signature is missing (when required) or wrong.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A method other than GET, HEAD or OPTIONS.
    #[error("method not allowed: use GET, HEAD or OPTIONS")]
    MethodNotAllowed,
    /// Fetching the upstream image failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Upstream answered 404 or 410, now or recently (negatively cached for `cache_seconds`).
    #[error("upstream image not found")]
    UpstreamNotFound {
        /// How long clients may cache this answer.
        cache_seconds: u64,
    },
    /// Upstream sent something that is not a supported image (HTML, SVG, scripts, ...).
    #[error("upstream response is not a supported image (JPEG, PNG, GIF, WebP, AVIF, BMP, ICO)")]
    NotAnImage,
    /// Decoding, transforming or encoding the image failed.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The request URI (options plus target) is longer than allowed.
    #[error("request URI is longer than {limit} bytes")]
    UriTooLong {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// Too much work in flight already.
    #[error("server is overloaded, retry shortly")]
    Overloaded,
    /// A bug or a panicked task: never expected.
    #[error("internal error")]
    Internal,
}

impl From<TargetError> for Error {
    fn from(error: TargetError) -> Error {
        Error::BadRequest(RequestError::Target(error))
    }
}

/// The stable machine-readable code of every failure: sent nowhere in the body, but logged in the access log and
/// used by `mirage warm` to group failures. The strings are an interface (logs, JSON reports): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The target URL is missing or not an absolute http(s) URL.
    BadTarget,
    /// A transform option is unknown, repeated or out of range.
    BadOptions,
    /// No route has this path.
    NoRoute,
    /// The server only serves signed URLs and this one has no signature.
    SignatureRequired,
    /// The URL signature is wrong.
    BadSignature,
    /// A method other than GET, HEAD or OPTIONS.
    MethodNotAllowed,
    /// Upstream answered 404 or 410.
    UpstreamNotFound,
    /// Upstream's body is not a supported image.
    NotAnImage,
    /// The request URI is too long.
    UriTooLong,
    /// Too much work in flight.
    Overloaded,
    /// A bug or a panicked task.
    Internal,
    /// The source has more pixels than allowed.
    SourceTooManyPixels,
    /// The output would have more pixels than allowed.
    OutputTooLarge,
    /// An explicit AVIF output would have more pixels than `--max-avif-pixels`.
    AvifTooLarge,
    /// The animation has more frames than allowed.
    TooManyFrames,
    /// The source image cannot be decoded.
    UndecodableImage,
    /// A source format this build cannot transform.
    UnsupportedSource,
    /// An output format this build cannot encode.
    UnsupportedOutput,
    /// The encoder failed.
    EncodeFailed,
    /// The target or a redirect hop resolves to a non-public address, or leaves http(s).
    ForbiddenTarget,
    /// The host is refused by the operator's host rules.
    ForbiddenHost,
    /// The port is refused by the operator's port rules.
    ForbiddenPort,
    /// The source is larger than allowed.
    SourceTooLarge,
    /// Upstream did not answer in time.
    UpstreamTimeout,
    /// Upstream answered with a status we do not serve.
    UpstreamStatus,
    /// Upstream redirected too many times.
    TooManyRedirects,
    /// Upstream redirected without a usable `Location`.
    BadRedirect,
    /// Upstream could not be reached.
    UpstreamUnreachable,
    /// Upstream's body broke off.
    UpstreamBody,
}

impl ErrorCode {
    /// The code as logged and reported: stable snake_case.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadTarget => "bad_target",
            ErrorCode::BadOptions => "bad_options",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::SignatureRequired => "signature_required",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UpstreamNotFound => "upstream_not_found",
            ErrorCode::NotAnImage => "not_an_image",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
            ErrorCode::SourceTooManyPixels => "source_too_many_pixels",
            ErrorCode::OutputTooLarge => "output_too_large",
            ErrorCode::AvifTooLarge => "avif_too_large",
            ErrorCode::TooManyFrames => "too_many_frames",
            ErrorCode::UndecodableImage => "undecodable_image",
            ErrorCode::UnsupportedSource => "unsupported_source",
            ErrorCode::UnsupportedOutput => "unsupported_output",
            ErrorCode::EncodeFailed => "encode_failed",
            ErrorCode::ForbiddenTarget => "forbidden_target",
            ErrorCode::ForbiddenHost => "forbidden_host",
            ErrorCode::ForbiddenPort => "forbidden_port",
            ErrorCode::SourceTooLarge => "source_too_large",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::UpstreamStatus => "upstream_status",
            ErrorCode::TooManyRedirects => "too_many_redirects",
            ErrorCode::BadRedirect => "bad_redirect",
            ErrorCode::UpstreamUnreachable => "upstream_unreachable",
            ErrorCode::UpstreamBody => "upstream_body",
        }
    }
}

impl ErrorCode {
    /// Whether `--fallback-image` may answer instead of this error: only when the fault is upstream's or the
    /// source image's (a dead origin, a refusal, a file that is not a usable image). Never for the client's own
    /// mistakes or the operator's policy: a placeholder there would hide a bug or paper over a refusal. Exhaustive
    /// on purpose: a new code must be classified here.
    pub fn fallback_applies(self) -> bool {
        match self {
            // Upstream's fault: gone, refusing, failing, slow, or misbehaving.
            ErrorCode::UpstreamNotFound
            | ErrorCode::UpstreamStatus
            | ErrorCode::UpstreamTimeout
            | ErrorCode::UpstreamUnreachable
            | ErrorCode::UpstreamBody
            | ErrorCode::TooManyRedirects
            | ErrorCode::BadRedirect => true,
            // The source image's fault: too big, not an image, or not one we can read.
            ErrorCode::SourceTooLarge
            | ErrorCode::SourceTooManyPixels
            | ErrorCode::TooManyFrames
            | ErrorCode::NotAnImage
            | ErrorCode::UnsupportedSource
            | ErrorCode::UndecodableImage => true,
            // The client's request: bad URL or options, an output it asked to be too large or in a format this
            // build lacks, a wrong method or an overlong URI.
            ErrorCode::BadTarget
            | ErrorCode::BadOptions
            | ErrorCode::NoRoute
            | ErrorCode::MethodNotAllowed
            | ErrorCode::UriTooLong
            | ErrorCode::OutputTooLarge
            | ErrorCode::AvifTooLarge
            | ErrorCode::UnsupportedOutput => false,
            // The operator's policy: signatures, SSRF and host/port rules.
            ErrorCode::SignatureRequired
            | ErrorCode::BadSignature
            | ErrorCode::ForbiddenTarget
            | ErrorCode::ForbiddenHost
            | ErrorCode::ForbiddenPort => false,
            // Our own state: overload asks the client to retry (a placeholder would be cached instead), and a bug
            // or an encoder failure must stay visible.
            ErrorCode::Overloaded | ErrorCode::Internal | ErrorCode::EncodeFailed => false,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an error is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicError {
    /// HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, also logged.
    pub code: ErrorCode,
    /// One line of plain text, safe to show: never a resolved address, an upstream's body or error text, a file
    /// path or an internal error string (those are in the log line of the request).
    pub message: Cow<'static, str>,
    /// Seconds clients may cache this answer; `None` means `no-store`.
    pub cache_seconds: Option<u64>,
    /// `Retry-After` seconds, for 503.
    pub retry_after: Option<u64>,
}

impl Error {
    /// The status table of the service: status, code and public message of every failure. Exhaustive on purpose:
    /// a new failure must be given all three here. `Display` is the detailed text, for the log only.
    pub fn public(&self) -> PublicError {
        use Cow::Borrowed as Fixed;
        use ErrorCode as C;
        use StatusCode as S;
        let (status, code, message): (StatusCode, ErrorCode, Cow<'static, str>) = match self {
            // The parser's text names the key and the allowed values; it is built from the client's own request
            // and our constants only, so it is shown as it is.
            Error::BadRequest(request @ RequestError::Target(_)) => {
                (S::BAD_REQUEST, C::BadTarget, request.to_string().into())
            }
            Error::BadRequest(request @ (RequestError::Options(_) | RequestError::OptionsEncoding)) => {
                (S::BAD_REQUEST, C::BadOptions, request.to_string().into())
            }
            // A dialect's image URL is its target; every other parameter is an option.
            Error::BadRequest(request @ RequestError::Dialect(dialect)) => {
                let code = if dialect.names_the_image() { C::BadTarget } else { C::BadOptions };
                (S::BAD_REQUEST, code, request.to_string().into())
            }
            Error::NoRoute => (S::NOT_FOUND, C::NoRoute, Fixed("no such route")),
            Error::Signature(SignatureError::Missing) => (
                S::FORBIDDEN,
                C::SignatureRequired,
                Fixed("this server only serves signed URLs: add sig= to the options"),
            ),
            Error::Signature(SignatureError::Invalid) => {
                (S::FORBIDDEN, C::BadSignature, Fixed("invalid URL signature"))
            }
            Error::MethodNotAllowed => {
                (S::METHOD_NOT_ALLOWED, C::MethodNotAllowed, Fixed("method not allowed: use GET, HEAD or OPTIONS"))
            }
            Error::UpstreamNotFound { .. } => (S::NOT_FOUND, C::UpstreamNotFound, Fixed("upstream image not found")),
            Error::NotAnImage => (
                S::UNSUPPORTED_MEDIA_TYPE,
                C::NotAnImage,
                Fixed("upstream response is not a supported image (JPEG, PNG, GIF, WebP, AVIF, BMP, ICO)"),
            ),
            Error::UriTooLong { limit } => {
                (S::URI_TOO_LONG, C::UriTooLong, format!("request URI is longer than {limit} bytes").into())
            }
            Error::Overloaded => (S::SERVICE_UNAVAILABLE, C::Overloaded, Fixed("server is overloaded, retry shortly")),
            Error::Internal => (S::INTERNAL_SERVER_ERROR, C::Internal, Fixed("internal error")),
            // Limits are the operator's configuration, not a secret; the source's own dimensions stay in the log.
            Error::Transform(transform) => match transform {
                TransformError::TooManyPixels { limit, .. } => (
                    S::PAYLOAD_TOO_LARGE,
                    C::SourceTooManyPixels,
                    format!("source image has more pixels than this server's limit of {limit}").into(),
                ),
                TransformError::OutputTooLarge { limit, .. } => (
                    S::PAYLOAD_TOO_LARGE,
                    C::OutputTooLarge,
                    format!("output image would have more pixels than this server's limit of {limit}").into(),
                ),
                TransformError::AvifTooLarge { limit, .. } => (
                    S::BAD_REQUEST,
                    C::AvifTooLarge,
                    format!(
                        "AVIF output would have more pixels than this server's limit of {limit} \
                         (--max-avif-pixels): ask for a smaller size, another format or format=auto"
                    )
                    .into(),
                ),
                TransformError::TooManyFrames { limit, .. } => (
                    S::PAYLOAD_TOO_LARGE,
                    C::TooManyFrames,
                    format!("animation has more frames than this server's limit of {limit}").into(),
                ),
                // The decoder's and encoder's own texts may name internals: log only.
                TransformError::Undecodable(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    C::UndecodableImage,
                    Fixed("cannot decode the source image: it is truncated or corrupt"),
                ),
                // The format names are our own constants.
                TransformError::UnsupportedSource(format) => (
                    S::UNSUPPORTED_MEDIA_TYPE,
                    C::UnsupportedSource,
                    format!("cannot transform {format} images").into(),
                ),
                TransformError::UnsupportedOutput(format) => (
                    S::BAD_REQUEST,
                    C::UnsupportedOutput,
                    format!("output format {format} is not supported by this server").into(),
                ),
                TransformError::Encode(_) => {
                    (S::INTERNAL_SERVER_ERROR, C::EncodeFailed, Fixed("internal error: cannot encode the image"))
                }
            },
            // Fetch errors carry addresses, host names from redirects and the HTTP client's error texts: none of
            // it is shown.
            Error::Fetch(fetch) => match fetch {
                FetchError::Forbidden(_) => (
                    S::FORBIDDEN,
                    C::ForbiddenTarget,
                    Fixed("forbidden target: the host resolves to a non-public address, or a redirect leaves http(s)"),
                ),
                FetchError::HostRule(HostRefusal::Denied(_)) => (
                    S::FORBIDDEN,
                    C::ForbiddenHost,
                    Fixed("forbidden host: the target host is denied by the server's host rules"),
                ),
                FetchError::HostRule(HostRefusal::NotAllowed(_)) => (
                    S::FORBIDDEN,
                    C::ForbiddenHost,
                    Fixed("forbidden host: the target host is not in the server's allowed hosts"),
                ),
                FetchError::HostRule(HostRefusal::Port(_)) => (
                    S::FORBIDDEN,
                    C::ForbiddenPort,
                    Fixed("forbidden port: the target port is not allowed by the server"),
                ),
                FetchError::NotFound(_) => (S::NOT_FOUND, C::UpstreamNotFound, Fixed("upstream image not found")),
                FetchError::TooLarge { limit } => (
                    S::PAYLOAD_TOO_LARGE,
                    C::SourceTooLarge,
                    format!("source image is larger than this server's limit of {limit} bytes").into(),
                ),
                FetchError::Timeout => {
                    (S::GATEWAY_TIMEOUT, C::UpstreamTimeout, Fixed("upstream did not answer in time"))
                }
                FetchError::UpstreamStatus(_) => {
                    (S::BAD_GATEWAY, C::UpstreamStatus, Fixed("upstream answered with an error status"))
                }
                FetchError::TooManyRedirects(limit) => (
                    S::BAD_GATEWAY,
                    C::TooManyRedirects,
                    format!("upstream redirected more than this server's limit of {limit} times").into(),
                ),
                FetchError::BadRedirect(_) => {
                    (S::BAD_GATEWAY, C::BadRedirect, Fixed("upstream sent a redirect without a usable location"))
                }
                FetchError::Connect(_) => {
                    (S::BAD_GATEWAY, C::UpstreamUnreachable, Fixed("could not connect to upstream"))
                }
                FetchError::Body(_) => {
                    (S::BAD_GATEWAY, C::UpstreamBody, Fixed("upstream broke off while sending the image"))
                }
            },
        };
        let cache_seconds = match self {
            Error::UpstreamNotFound { cache_seconds } => Some(*cache_seconds),
            _ => None,
        };
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        // One line, whatever the client put into the request the parser echoes.
        let message = if message.contains(['\r', '\n']) { message.replace(['\r', '\n'], " ").into() } else { message };
        PublicError { status, code, message, cache_seconds, retry_after }
    }

    /// Whether upstream is failing in a way a stale cached copy may cover (stale-if-error).
    pub fn allows_stale(&self) -> bool {
        match self {
            Error::Fetch(FetchError::UpstreamStatus(status)) => *status >= 500,
            Error::Fetch(FetchError::Timeout | FetchError::Connect(_) | FetchError::Body(_)) => true,
            Error::Overloaded => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESS: &str = "10.1.2.3";
    const SECRET: &str = "/var/lib/mirage/secret";

    /// Every fetch failure with an underlying detail (an address, a host, a port, a status, a path, an internal
    /// error text), as the fetcher builds them.
    fn fetch_errors_with_detail() -> Vec<(FetchError, Vec<String>)> {
        let detail = |texts: &[&str]| texts.iter().map(|text| (*text).to_owned()).collect::<Vec<_>>();
        vec![
            (
                FetchError::Forbidden(format!("target address {ADDRESS} is forbidden (private)")),
                detail(&[ADDRESS, "(private)"]),
            ),
            (FetchError::Forbidden("redirect to non-http scheme".to_owned()), detail(&["non-http scheme"])),
            (FetchError::HostRule(HostRefusal::Denied("intranet.corp".to_owned())), detail(&["intranet.corp"])),
            (FetchError::HostRule(HostRefusal::NotAllowed(ADDRESS.to_owned())), detail(&[ADDRESS])),
            (FetchError::HostRule(HostRefusal::Port(8081)), detail(&["8081"])),
            (FetchError::NotFound(410), detail(&["410"])),
            (FetchError::UpstreamStatus(599), detail(&["599"])),
            (FetchError::BadRedirect(format!("Location http://{ADDRESS}{SECRET}")), detail(&[ADDRESS, SECRET])),
            (FetchError::Connect(format!("dns error: {SECRET}: {ADDRESS} refused")), detail(&[ADDRESS, SECRET])),
            (FetchError::Body(format!("connection reset by {ADDRESS}")), detail(&[ADDRESS, "reset"])),
        ]
    }

    #[test]
    fn fetch_errors_do_not_disclose_their_detail() {
        for (fetch, details) in fetch_errors_with_detail() {
            let error = Error::Fetch(fetch);
            let public = error.public();
            for detail in &details {
                assert!(error.to_string().contains(detail.as_str()), "the log keeps {detail:?}: {error}");
                assert!(!public.message.contains(detail.as_str()), "{:?} discloses {detail:?}", public.message);
            }
        }
    }

    #[test]
    fn transform_errors_do_not_disclose_internal_texts() {
        for transform in [
            TransformError::Undecodable(format!("{SECRET}: bad Huffman table")),
            TransformError::Encode(format!("{SECRET}: out of memory")),
        ] {
            let public = Error::Transform(transform).public();
            assert!(!public.message.contains(SECRET), "{:?}", public.message);
        }
    }

    #[test]
    fn a_refused_address_is_named_in_the_log_only() {
        let error = Error::Fetch(FetchError::Forbidden(format!("target address {ADDRESS} is forbidden (private)")));
        let public = error.public();
        assert_eq!((public.status, public.code), (StatusCode::FORBIDDEN, ErrorCode::ForbiddenTarget));
        assert!(public.message.starts_with("forbidden target: the host resolves to a non-public address"));
        assert!(!public.message.contains(ADDRESS), "the address reaches the client: {}", public.message);
        assert!(error.to_string().contains(ADDRESS), "the log loses the address: {error}");
    }

    #[test]
    fn bad_requests_keep_the_parser_text_and_limits_are_named() {
        let bad = Error::from(crate::request::Target::parse("ftp://h/a.jpg").unwrap_err());
        assert_eq!(bad.public().message, bad.to_string());
        assert_eq!(bad.public().code.as_str(), "bad_target");
        let too_large = Error::Fetch(FetchError::TooLarge { limit: 10_240 }).public();
        assert_eq!((too_large.status, too_large.code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "source_too_large"));
        assert!(too_large.message.contains("10240"), "{:?}", too_large.message);
        let avif = Error::Transform(TransformError::AvifTooLarge { width: 3000, height: 2000, limit: 4_000_000 });
        let avif = avif.public();
        assert_eq!((avif.status, avif.code.as_str()), (StatusCode::BAD_REQUEST, "avif_too_large"));
        assert!(avif.message.contains("--max-avif-pixels") && avif.message.contains("4000000"), "{:?}", avif.message);
        assert!(!avif.message.contains("3000"), "{:?}", avif.message);
        let frames = Error::Transform(TransformError::TooManyFrames { frames: 900, limit: 5 }).public();
        assert!(frames.message.contains("frames") && frames.message.contains('5'), "{:?}", frames.message);
        assert!(!frames.message.contains("900"), "{:?}", frames.message);
    }

    #[test]
    fn public_messages_are_one_line() {
        let error = Error::BadRequest(RequestError::Target(TargetError::Malformed("a\r\nb".to_owned())));
        assert!(!error.public().message.contains(['\r', '\n']));
    }

    #[test]
    fn the_fallback_covers_upstream_and_source_faults_only() {
        let fallback = |error: Error| error.public().code.fallback_applies();
        assert!(fallback(Error::UpstreamNotFound { cache_seconds: 60 }));
        assert!(fallback(Error::NotAnImage));
        assert!(fallback(Error::Fetch(FetchError::UpstreamStatus(403))));
        assert!(fallback(Error::Fetch(FetchError::Timeout)));
        assert!(fallback(Error::Fetch(FetchError::TooLarge { limit: 1 })));
        assert!(fallback(Error::Transform(TransformError::Undecodable(String::new()))));
        assert!(!fallback(Error::Fetch(FetchError::Forbidden(String::new()))));
        assert!(!fallback(Error::Fetch(FetchError::HostRule(HostRefusal::Port(81)))));
        assert!(!fallback(Error::Signature(SignatureError::Invalid)));
        assert!(!fallback(Error::MethodNotAllowed));
        assert!(!fallback(Error::UriTooLong { limit: 1 }));
        assert!(!fallback(Error::Overloaded));
        assert!(!fallback(Error::Internal));
    }

    #[test]
    fn codes_are_the_stable_strings() {
        let codes = [
            (ErrorCode::ForbiddenTarget, "forbidden_target"),
            (ErrorCode::UpstreamNotFound, "upstream_not_found"),
            (ErrorCode::SourceTooManyPixels, "source_too_many_pixels"),
            (ErrorCode::UpstreamUnreachable, "upstream_unreachable"),
        ];
        for (code, text) in codes {
            assert_eq!(code.as_str(), text);
            assert_eq!(code.to_string(), text);
        }
    }
}
