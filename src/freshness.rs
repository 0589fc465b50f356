//! How long a fetched image stays fresh: upstream's `Cache-Control` / `Expires`, clamped by our policy.

use std::time::{Duration, SystemTime};

use crate::fetch::UpstreamHeaders;

/// Freshness rules for cached upstream responses.
#[derive(Debug, Clone)]
pub struct FreshnessPolicy {
    /// Lower clamp of the upstream lifetime.
    pub min_ttl: Duration,
    /// Upper clamp of the upstream lifetime.
    pub max_ttl: Duration,
    /// Lifetime when upstream gives none.
    pub default_ttl: Duration,
    /// How long past expiry a stale entry may answer when upstream fails.
    pub stale_if_error: Duration,
    /// Lifetime of a remembered upstream 404/410.
    pub negative_ttl: Duration,
}

/// What to do with a successful upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Upstream said `no-store`: serve it, keep nothing.
    NoStore,
    /// Keep it fresh for this long.
    Fresh(Duration),
}

impl FreshnessPolicy {
    /// The lifetime of a response with these headers, received at `now`.
    pub fn lifetime(&self, headers: &UpstreamHeaders, now: SystemTime) -> Freshness {
        let directives = headers.cache_control.as_deref().map(CacheControl::parse).unwrap_or_default();
        if directives.no_store {
            return Freshness::NoStore;
        }
        let upstream = directives
            .s_maxage
            .or(directives.max_age)
            .map(Duration::from_secs)
            .map(|max_age| max_age.saturating_sub(parse_age(headers.age.as_deref())))
            .or_else(|| expires_lifetime(headers, now));
        let lifetime = upstream.unwrap_or(self.default_ttl);
        Freshness::Fresh(lifetime.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl)))
    }
}

/// The `Cache-Control` directives that matter to a shared cache.
#[derive(Debug, Default, PartialEq, Eq)]
struct CacheControl {
    no_store: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

impl CacheControl {
    fn parse(value: &str) -> CacheControl {
        let mut parsed = CacheControl::default();
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = || argument.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" => parsed.no_store = true,
                // RFC 9111: when a directive appears twice with different values, the first one wins here.
                "max-age" => parsed.max_age = parsed.max_age.or_else(seconds),
                "s-maxage" => parsed.s_maxage = parsed.s_maxage.or_else(seconds),
                _ => {}
            }
        }
        parsed
    }
}

fn parse_age(age: Option<&str>) -> Duration {
    Duration::from_secs(age.and_then(|age| age.trim().parse().ok()).unwrap_or(0))
}

/// `Expires` minus upstream's `Date` (or our clock when Date is missing); an invalid Expires means "already expired".
fn expires_lifetime(headers: &UpstreamHeaders, now: SystemTime) -> Option<Duration> {
    let expires = headers.expires.as_deref()?;
    let Ok(expires) = httpdate::parse_http_date(expires.trim()) else {
        return Some(Duration::ZERO);
    };
    let date = headers.date.as_deref().and_then(|date| httpdate::parse_http_date(date.trim()).ok()).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86400);

    fn policy() -> FreshnessPolicy {
        FreshnessPolicy {
            min_ttl: HOUR,
            max_ttl: 30 * DAY,
            default_ttl: 7 * DAY,
            stale_if_error: 7 * DAY,
            negative_ttl: Duration::from_secs(60),
        }
    }

    fn headers(cache_control: Option<&str>, expires: Option<&str>, date: Option<&str>) -> UpstreamHeaders {
        UpstreamHeaders {
            cache_control: cache_control.map(str::to_owned),
            expires: expires.map(str::to_owned),
            date: date.map(str::to_owned),
            ..UpstreamHeaders::default()
        }
    }

    #[test]
    fn max_age_within_bounds_is_kept() {
        let now = SystemTime::now();
        assert_eq!(
            policy().lifetime(&headers(Some("public, max-age=7200"), None, None), now),
            Freshness::Fresh(2 * HOUR)
        );
    }

    #[test]
    fn s_maxage_wins_over_max_age() {
        let h = headers(Some("max-age=7200, s-maxage=10800"), None, None);
        assert_eq!(policy().lifetime(&h, SystemTime::now()), Freshness::Fresh(3 * HOUR));
    }

    #[test]
    fn lifetimes_are_clamped() {
        let now = SystemTime::now();
        assert_eq!(policy().lifetime(&headers(Some("max-age=5"), None, None), now), Freshness::Fresh(HOUR));
        assert_eq!(
            policy().lifetime(&headers(Some("max-age=0, must-revalidate"), None, None), now),
            Freshness::Fresh(HOUR)
        );
        assert_eq!(policy().lifetime(&headers(Some("max-age=31536000"), None, None), now), Freshness::Fresh(30 * DAY));
    }

    #[test]
    fn no_store_is_honoured() {
        assert_eq!(policy().lifetime(&headers(Some("No-Store"), None, None), SystemTime::now()), Freshness::NoStore);
    }

    #[test]
    fn silence_gives_the_default() {
        assert_eq!(policy().lifetime(&headers(None, None, None), SystemTime::now()), Freshness::Fresh(7 * DAY));
    }

    #[test]
    fn expires_is_relative_to_upstream_date() {
        let h = headers(None, Some("Thu, 03 Jan 2030 00:00:00 GMT"), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert_eq!(policy().lifetime(&h, SystemTime::now()), Freshness::Fresh(2 * DAY));
        let invalid = headers(None, Some("0"), None);
        assert_eq!(policy().lifetime(&invalid, SystemTime::now()), Freshness::Fresh(HOUR));
    }

    #[test]
    fn max_age_beats_expires_and_age_is_subtracted() {
        let mut h = headers(
            Some("max-age=90000"),
            Some("Thu, 03 Jan 2030 00:00:00 GMT"),
            Some("Tue, 01 Jan 2030 00:00:00 GMT"),
        );
        h.age = Some("3600".into());
        assert_eq!(policy().lifetime(&h, SystemTime::now()), Freshness::Fresh(Duration::from_secs(86400)));
    }
}
