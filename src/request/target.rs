//! The target of a mirror request: the raw text after the first `?`, turned into an absolute http(s) URL.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;
use url::Url;

/// Why a target was refused (each becomes a 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Nothing after `?`.
    #[error("missing target URL: use /?https://host/path/image.jpg")]
    Missing,
    /// Not an absolute URL even after decoding.
    #[error("target is not an absolute URL")]
    NotAbsolute,
    /// Decoding the target did not give UTF-8 text.
    #[error("target URL is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    /// An absolute URL that does not parse.
    #[error("target URL is malformed: {0}")]
    Malformed(String),
    /// ftp:, data:, file: and the rest.
    #[error("target scheme {0:?} is not allowed: only http and https")]
    Scheme(String),
    /// `http:///path` and friends.
    #[error("target URL has no host")]
    NoHost,
}

/// An absolute `http`/`https` URL to fetch. Always valid: the only way to make one is `Target::parse`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Target(Url);

/// How many times a percent-encoded target is decoded at most (CORS workers accept double encoding).
const MAX_DECODES: usize = 2;

impl Target {
    /// Parses the raw query of `/?{target}`. A target that already starts with a scheme is used as it is
    /// (its own `?` and `&` belong to it); otherwise it is percent-decoded, at most twice, until it does.
    pub fn parse(raw: &str) -> Result<Target, TargetError> {
        if raw.is_empty() {
            return Err(TargetError::Missing);
        }
        let mut text: Cow<str> = Cow::Borrowed(raw);
        let mut decodes = 0;
        while !starts_with_scheme(&text) {
            if decodes == MAX_DECODES {
                return Err(TargetError::NotAbsolute);
            }
            let decoded = percent_decode_str(&text).decode_utf8().map_err(|_| TargetError::NotUtf8)?.into_owned();
            if decoded == *text {
                return Err(TargetError::NotAbsolute);
            }
            text = Cow::Owned(decoded);
            decodes += 1;
        }
        let mut url = Url::parse(text.trim()).map_err(|error| TargetError::Malformed(error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme(url.scheme().to_owned()));
        }
        if url.host().is_none() {
            return Err(TargetError::NoHost);
        }
        // Browsers never send fragments; one that got here must not split the cache.
        url.set_fragment(None);
        Ok(Target(url))
    }

    /// The URL to fetch.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The canonical spelling, the same for every spelling of one URL: the cache key is made from it.
    pub fn canonical(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", self.0)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// RFC 3986: `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` followed by `:`.
pub(super) fn starts_with_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    for c in chars {
        match c {
            ':' => return true,
            c if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.') => {}
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "http://static.1sapp.com/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";

    #[test]
    fn raw_target_is_used_as_is() {
        assert_eq!(Target::parse(SEED).map(|t| t.to_string()), Ok(SEED.to_owned()));
    }

    #[test]
    fn target_keeps_its_own_query() {
        let target = Target::parse("http://h/a.jpg?x=1&y=2").expect("valid");
        assert_eq!(target.canonical(), "http://h/a.jpg?x=1&y=2");
    }

    #[test]
    fn encoded_and_double_encoded_targets_share_the_canonical_form() {
        let raw = Target::parse("http://h/a.jpg?x=1&y=2").expect("raw");
        let once = Target::parse("http%3A%2F%2Fh%2Fa.jpg%3Fx%3D1%26y%3D2").expect("once");
        let twice = Target::parse("http%253A%252F%252Fh%252Fa.jpg%253Fx%253D1%2526y%253D2").expect("twice");
        assert_eq!(raw, once);
        assert_eq!(raw, twice);
    }

    #[test]
    fn triple_encoding_is_refused() {
        assert_eq!(Target::parse("http%25253A%25252F%25252Fh%25252Fa.jpg"), Err(TargetError::NotAbsolute));
    }

    #[test]
    fn host_case_and_default_port_are_canonicalised() {
        let a = Target::parse("HTTP://Static.1SAPP.com:80/a.jpeg").expect("valid");
        assert_eq!(a.canonical(), "http://static.1sapp.com/a.jpeg");
    }

    #[test]
    fn fragment_is_dropped() {
        assert_eq!(Target::parse("https://h/a.png#top").expect("valid").canonical(), "https://h/a.png");
    }

    #[test]
    fn refusals() {
        assert_eq!(Target::parse(""), Err(TargetError::Missing));
        assert_eq!(Target::parse("/relative/a.jpg"), Err(TargetError::NotAbsolute));
        assert_eq!(Target::parse("static.1sapp.com/a.jpg"), Err(TargetError::NotAbsolute));
        assert_eq!(Target::parse("ftp://h/a.jpg"), Err(TargetError::Scheme("ftp".into())));
        assert_eq!(Target::parse("javascript:alert(1)"), Err(TargetError::Scheme("javascript".into())));
        assert_eq!(Target::parse("data:image/png;base64,AAAA"), Err(TargetError::Scheme("data".into())));
        assert!(matches!(Target::parse("http://"), Err(TargetError::Malformed(_) | TargetError::NoHost)));
        assert_eq!(Target::parse("%FF%FE"), Err(TargetError::NotUtf8));
    }
}
