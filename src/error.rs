//! The one error type of a request, and the ONLY place where failures become HTTP statuses and public messages.

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

/// How an error is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicError {
    /// HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, also logged.
    pub code: &'static str,
    /// One line of plain text.
    pub message: String,
    /// Seconds clients may cache this answer; `None` means `no-store`.
    pub cache_seconds: Option<u64>,
    /// `Retry-After` seconds, for 503.
    pub retry_after: Option<u64>,
}

impl Error {
    /// The status table of the service. Exhaustive on purpose: a new failure must be given a status here.
    pub fn public(&self) -> PublicError {
        let (status, code) = match self {
            Error::BadRequest(RequestError::Target(_)) => (StatusCode::BAD_REQUEST, "bad_target"),
            Error::BadRequest(RequestError::Options(_) | RequestError::OptionsEncoding) => {
                (StatusCode::BAD_REQUEST, "bad_options")
            }
            // The handler turns `RequestError::NoRoute` into `Error::NoRoute`; both are the same 404.
            Error::NoRoute | Error::BadRequest(RequestError::NoRoute) => (StatusCode::NOT_FOUND, "no_route"),
            Error::Signature(SignatureError::Missing) => (StatusCode::FORBIDDEN, "signature_required"),
            Error::Signature(SignatureError::Invalid) => (StatusCode::FORBIDDEN, "bad_signature"),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::UpstreamNotFound { .. } => (StatusCode::NOT_FOUND, "upstream_not_found"),
            Error::NotAnImage => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_an_image"),
            Error::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Error::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Error::Transform(transform) => match transform {
                TransformError::TooManyPixels { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "source_too_many_pixels"),
                TransformError::OutputTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "output_too_large"),
                TransformError::TooManyFrames { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_frames"),
                TransformError::Undecodable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "undecodable_image"),
                TransformError::UnsupportedSource(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_source"),
                TransformError::UnsupportedOutput(_) => (StatusCode::BAD_REQUEST, "unsupported_output"),
                TransformError::Encode(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encode_failed"),
            },
            Error::Fetch(fetch) => match fetch {
                FetchError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden_target"),
                FetchError::HostRule(HostRefusal::Denied(_) | HostRefusal::NotAllowed(_)) => {
                    (StatusCode::FORBIDDEN, "forbidden_host")
                }
                FetchError::HostRule(HostRefusal::Port(_)) => (StatusCode::FORBIDDEN, "forbidden_port"),
                FetchError::NotFound(_) => (StatusCode::NOT_FOUND, "upstream_not_found"),
                FetchError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "source_too_large"),
                FetchError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
                FetchError::UpstreamStatus(_) => (StatusCode::BAD_GATEWAY, "upstream_status"),
                FetchError::TooManyRedirects(_) => (StatusCode::BAD_GATEWAY, "too_many_redirects"),
                FetchError::BadRedirect(_) => (StatusCode::BAD_GATEWAY, "bad_redirect"),
                FetchError::Connect(_) => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
                FetchError::Body(_) => (StatusCode::BAD_GATEWAY, "upstream_body"),
            },
        };
        let cache_seconds = match self {
            Error::UpstreamNotFound { cache_seconds } => Some(*cache_seconds),
            _ => None,
        };
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        // One line, whatever upstream put into an error's text.
        let message = self.to_string().replace(['\r', '\n'], " ");
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
