//! Whether a fetched image is kept and how long it stays fresh (RFC 9111): upstream's `Cache-Control` /
//! `Expires`, clamped by our policy, merged with a 304's headers on revalidation, and judged against the
//! pipeline's clock.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mirage_cache::FreshnessInputs;

use crate::fetch::UpstreamHeaders;

mod cache_control;
pub use cache_control::CacheControl;

/// The time every freshness and expiry decision on the request path reads: lookups, admission, revalidation,
/// negative caching, stale-if-error and the `max-age` sent to clients. The system clock in service; a
/// [`ManualClock`] in tests, so lifetimes are tested by advancing time rather than by sleeping. Cheap to clone.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime::now))
    }

    /// A clock that reads the time from `now`.
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }

    /// The current time in seconds since the Unix epoch, the unit of the cache metadata.
    pub fn unix_now(&self) -> u64 {
        unix_seconds(self.now())
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Printing a configuration must not read the clock (a test clock may count its readings).
        f.write_str("Clock(..)")
    }
}

/// Seconds since the Unix epoch (0 for earlier times).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// A clock that stands still until it is moved (for tests). Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        // A SystemTime cannot be left half-written, so a poisoned lock still holds a valid time.
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A [`Clock`] that reads this manual clock.
    pub fn clock(&self) -> Clock {
        let manual = self.clone();
        Clock::from_fn(move || manual.now())
    }
}

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

/// What to do with a successful upstream response (a 200, or a 304 that confirms a stored copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Upstream said `no-store` (or `Vary: *`): serve it, keep nothing.
    NoStore,
    /// Upstream said `private`: a shared cache keeps nothing; the requesting client alone may keep it.
    Private,
    /// Keep it, with this lifetime.
    Fresh(Lifetime),
}

impl Freshness {
    /// The lifetime when the answer is kept; `None` for `no-store` and `private`.
    pub fn ttl(&self) -> Option<Duration> {
        match self {
            Freshness::Fresh(lifetime) => Some(lifetime.ttl),
            Freshness::NoStore | Freshness::Private => None,
        }
    }
}

/// How long an entry stays fresh, and the upstream word it was computed from (stored with the entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// From now: upstream's lifetime less its `Age`, clamped by `--min-ttl`/`--max-ttl`, or `--default-ttl` when
    /// upstream gave none; zero for `no-cache` and `max-age=0`, which no clamp lifts.
    pub ttl: Duration,
    /// What upstream said, kept so a bare 304 or a later decision does not fall back to our defaults.
    pub inputs: FreshnessInputs,
}

/// Upstream lifetimes above this are `immutable` to clients.
const IMMUTABLE_AFTER: u64 = 86_400;

/// Whether clients may be told `immutable`: only when upstream itself gave a lifetime over a day (never for our
/// `--default-ttl` or `--min-ttl`, which are guesses, not upstream's promise) and did not ask for revalidation.
pub fn immutable(inputs: &FreshnessInputs) -> bool {
    !inputs.no_cache && inputs.upstream_lifetime().is_some_and(|lifetime| lifetime > IMMUTABLE_AFTER)
}

/// Whether an expired entry may answer while upstream fails: not when upstream said `no-cache` or
/// `must-revalidate` / `proxy-revalidate` (RFC 9111 4.2.4).
pub fn may_serve_stale(inputs: &FreshnessInputs) -> bool {
    !inputs.no_cache && !inputs.must_revalidate
}

/// Whether an entry that expired at `expires_at` may answer at `now` (Unix seconds) while it is revalidated in the
/// background: within upstream's `stale-while-revalidate` of its expiry, unless `no-cache` asks for a revalidation
/// before every reuse.
pub fn within_stale_while_revalidate(inputs: &FreshnessInputs, expires_at: u64, now: u64) -> bool {
    !inputs.no_cache && inputs.stale_while_revalidate.is_some_and(|window| now < expires_at.saturating_add(window))
}

impl FreshnessPolicy {
    /// What to do with a 200 with these headers, received at `now`.
    pub fn lifetime(&self, headers: &UpstreamHeaders, now: SystemTime) -> Freshness {
        let directives = headers.cache_control.as_deref().map(CacheControl::parse).unwrap_or_default();
        // `Vary: *` names something no request can repeat (RFC 9111 4.1): not reusable, so not stored.
        if directives.no_store || varies_on_everything(headers) {
            return Freshness::NoStore;
        }
        if directives.private {
            return Freshness::Private;
        }
        let mut inputs = FreshnessInputs::default();
        apply_cache_control(&mut inputs, &directives);
        inputs.expires_lifetime = expires_lifetime(headers, now).map(|lifetime| lifetime.as_secs());
        Freshness::Fresh(self.fresh(inputs, headers))
    }

    /// What to do after a 304 confirmed an entry stored with `stored`: the 304's own headers update the inputs
    /// and absent ones keep the stored values (RFC 9111 4.3.4), so a bare 304 (S3 sends one) keeps upstream's
    /// lifetime instead of falling back to `--default-ttl`. A `Cache-Control` in the 304 replaces the stored one
    /// as a whole; an `Expires` replaces the stored `Expires`.
    pub fn revalidated(&self, stored: FreshnessInputs, headers: &UpstreamHeaders, now: SystemTime) -> Freshness {
        let mut inputs = stored;
        if let Some(value) = headers.cache_control.as_deref() {
            let directives = CacheControl::parse(value);
            if directives.no_store {
                return Freshness::NoStore;
            }
            if directives.private {
                return Freshness::Private;
            }
            apply_cache_control(&mut inputs, &directives);
        }
        if headers.expires.is_some() {
            inputs.expires_lifetime = expires_lifetime(headers, now).map(|lifetime| lifetime.as_secs());
        }
        Freshness::Fresh(self.fresh(inputs, headers))
    }

    /// The lifetime from `inputs`, less the answer's `Age`, within our bounds.
    fn fresh(&self, inputs: FreshnessInputs, headers: &UpstreamHeaders) -> Lifetime {
        // Revalidation before every reuse is upstream's explicit word: no clamp lifts it.
        if inputs.no_cache {
            return Lifetime { ttl: Duration::ZERO, inputs };
        }
        let ttl = match inputs.upstream_lifetime() {
            Some(lifetime) => Duration::from_secs(lifetime).saturating_sub(parse_age(headers.age.as_deref())),
            None => self.default_ttl,
        };
        Lifetime { ttl: ttl.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl)), inputs }
    }
}

/// Sets what `Cache-Control` decides: the lifetime (`s-maxage` wins for a shared cache) and the flags.
fn apply_cache_control(inputs: &mut FreshnessInputs, directives: &CacheControl) {
    let max_age = directives.s_maxage.or(directives.max_age);
    inputs.max_age = max_age;
    inputs.no_cache = directives.no_cache || max_age == Some(0);
    // RFC 9111 5.2.2.10: `s-maxage` also implies `proxy-revalidate`.
    inputs.must_revalidate = directives.must_revalidate || directives.s_maxage.is_some();
    inputs.stale_while_revalidate = directives.stale_while_revalidate;
}

fn varies_on_everything(headers: &UpstreamHeaders) -> bool {
    headers.vary.as_deref().is_some_and(|vary| vary.split(',').any(|name| name.trim() == "*"))
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

    /// A fixed "now": Tue, 01 Jan 2030 00:00:00 GMT. No test reads the wall clock.
    fn fixed_now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_893_456_000)
    }

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
        let now = fixed_now();
        assert_eq!(policy().lifetime(&headers(Some("public, max-age=7200"), None, None), now).ttl(), Some(2 * HOUR));
    }

    #[test]
    fn s_maxage_wins_over_max_age() {
        let h = headers(Some("max-age=7200, s-maxage=10800"), None, None);
        assert_eq!(policy().lifetime(&h, fixed_now()).ttl(), Some(3 * HOUR));
    }

    #[test]
    fn lifetimes_are_clamped() {
        let now = fixed_now();
        assert_eq!(policy().lifetime(&headers(Some("max-age=5"), None, None), now).ttl(), Some(HOUR));
        // A zero lifetime is upstream asking for revalidation before every reuse: no clamp lifts it.
        assert_eq!(
            policy().lifetime(&headers(Some("max-age=0, must-revalidate"), None, None), now).ttl(),
            Some(Duration::ZERO)
        );
        assert_eq!(
            policy().lifetime(&headers(Some("no-cache, max-age=600"), None, None), now).ttl(),
            Some(Duration::ZERO)
        );
        assert_eq!(policy().lifetime(&headers(Some("max-age=31536000"), None, None), now).ttl(), Some(30 * DAY));
    }

    #[test]
    fn no_store_is_honoured() {
        assert_eq!(policy().lifetime(&headers(Some("No-Store"), None, None), fixed_now()), Freshness::NoStore);
    }

    #[test]
    fn silence_gives_the_default() {
        assert_eq!(policy().lifetime(&headers(None, None, None), fixed_now()).ttl(), Some(7 * DAY));
    }

    #[test]
    fn expires_is_relative_to_upstream_date() {
        let h = headers(None, Some("Thu, 03 Jan 2030 00:00:00 GMT"), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert_eq!(policy().lifetime(&h, fixed_now()).ttl(), Some(2 * DAY));
        let invalid = headers(None, Some("0"), None);
        assert_eq!(policy().lifetime(&invalid, fixed_now()).ttl(), Some(HOUR));
    }

    #[test]
    fn max_age_beats_expires_and_age_is_subtracted() {
        let mut h = headers(
            Some("max-age=90000"),
            Some("Thu, 03 Jan 2030 00:00:00 GMT"),
            Some("Tue, 01 Jan 2030 00:00:00 GMT"),
        );
        h.age = Some("3600".into());
        assert_eq!(policy().lifetime(&h, fixed_now()).ttl(), Some(Duration::from_secs(86400)));
    }

    #[test]
    fn expires_without_date_is_relative_to_the_clock() {
        let clock = ManualClock::new(fixed_now());
        let h = headers(None, Some("Thu, 03 Jan 2030 00:00:00 GMT"), None);
        assert_eq!(policy().lifetime(&h, clock.now()).ttl(), Some(2 * DAY));
        clock.advance(DAY);
        assert_eq!(policy().lifetime(&h, clock.clock().now()).ttl(), Some(DAY));
        // Past Expires: already expired, so the lower clamp applies.
        clock.advance(3 * DAY);
        assert_eq!(policy().lifetime(&h, clock.now()).ttl(), Some(HOUR));
        // Upstream's Date, when sent, wins over our clock.
        let dated = headers(None, Some("Thu, 03 Jan 2030 00:00:00 GMT"), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert_eq!(policy().lifetime(&dated, clock.now()).ttl(), Some(2 * DAY));
    }

    #[test]
    fn stale_while_revalidate_is_kept_and_bounded() {
        let h = headers(Some("max-age=600, stale-while-revalidate=30, stale-while-revalidate=90"), None, None);
        let inputs = match policy().lifetime(&h, fixed_now()) {
            Freshness::Fresh(lifetime) => lifetime.inputs,
            other => panic!("{other:?}"),
        };
        assert_eq!(inputs.stale_while_revalidate, Some(30));
        assert!(within_stale_while_revalidate(&inputs, 1_000, 1_029));
        assert!(!within_stale_while_revalidate(&inputs, 1_000, 1_030));
        let no_cache = FreshnessInputs { no_cache: true, ..inputs };
        assert!(!within_stale_while_revalidate(&no_cache, 1_000, 1_001));
        assert!(!within_stale_while_revalidate(&FreshnessInputs::default(), 1_000, 1_001));
    }

    #[test]
    fn no_store_on_any_line_counts() {
        // Every line of the header arrives joined with commas: a `no-store` on a later line counts.
        let two_lines = headers(Some("public, max-age=600, no-store"), None, None);
        assert_eq!(policy().lifetime(&two_lines, fixed_now()), Freshness::NoStore);
    }

    #[test]
    fn vary_star_is_not_stored() {
        let mut h = headers(Some("max-age=600"), None, None);
        h.vary = Some("Accept, *".to_owned());
        assert_eq!(policy().lifetime(&h, fixed_now()), Freshness::NoStore);
        h.vary = Some("Accept".to_owned());
        assert_eq!(policy().lifetime(&h, fixed_now()).ttl(), Some(HOUR));
    }

    fn inputs_of(freshness: Freshness) -> FreshnessInputs {
        match freshness {
            Freshness::Fresh(lifetime) => lifetime.inputs,
            other => panic!("expected a stored answer, got {other:?}"),
        }
    }

    #[test]
    fn private_and_no_cache_are_told_apart() {
        let now = fixed_now();
        assert_eq!(policy().lifetime(&headers(Some("private, max-age=600"), None, None), now), Freshness::Private);
        assert_eq!(policy().lifetime(&headers(Some("private, no-store"), None, None), now), Freshness::NoStore);
        let no_cache = inputs_of(policy().lifetime(&headers(Some("no-cache"), None, None), now));
        assert!(no_cache.no_cache && !may_serve_stale(&no_cache) && !immutable(&no_cache));
        let zero = inputs_of(policy().lifetime(&headers(Some("max-age=0"), None, None), now));
        assert_eq!((zero.no_cache, zero.max_age), (true, Some(0)));
        // s-maxage is a shared cache's max-age, and implies proxy-revalidate (RFC 9111 5.2.2.10).
        let shared = inputs_of(policy().lifetime(&headers(Some("max-age=0, s-maxage=600"), None, None), now));
        assert_eq!((shared.no_cache, shared.must_revalidate, shared.max_age), (false, true, Some(600)));
        assert!(!may_serve_stale(&shared));
    }

    #[test]
    fn immutable_needs_upstream_own_lifetime_over_a_day() {
        let now = fixed_now();
        let of = |cache_control: Option<&str>| {
            immutable(&inputs_of(policy().lifetime(&headers(cache_control, None, None), now)))
        };
        assert!(!of(None), "the default lifetime is our guess, not upstream's");
        assert!(!of(Some("max-age=600")), "lifted by --min-ttl, still upstream's 600 s");
        assert!(!of(Some("max-age=86400")));
        assert!(of(Some("max-age=86401")));
        assert!(!of(Some("max-age=172800, no-cache")));
        let expires = headers(None, Some("Thu, 03 Jan 2030 00:00:00 GMT"), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert!(immutable(&inputs_of(policy().lifetime(&expires, now))));
    }

    #[test]
    fn a_304_updates_only_what_it_carries() {
        let now = fixed_now();
        let policy = FreshnessPolicy { min_ttl: Duration::ZERO, ..policy() };
        let stored = inputs_of(policy.lifetime(&headers(Some("max-age=7200, must-revalidate"), None, None), now));
        // A bare 304 keeps the stored lifetime and directives.
        let bare = policy.revalidated(stored, &UpstreamHeaders::default(), now);
        assert_eq!(bare.ttl(), Some(2 * HOUR));
        assert_eq!(inputs_of(bare), stored);
        // Its Age still counts.
        let aged = UpstreamHeaders { age: Some("600".to_owned()), ..UpstreamHeaders::default() };
        assert_eq!(policy.revalidated(stored, &aged, now).ttl(), Some(2 * HOUR - Duration::from_secs(600)));
        // A Cache-Control in the 304 replaces the stored one as a whole.
        let replaced = policy.revalidated(stored, &headers(Some("max-age=60"), None, None), now);
        assert_eq!(replaced.ttl(), Some(Duration::from_secs(60)));
        assert!(!inputs_of(replaced).must_revalidate);
        assert_eq!(policy.revalidated(stored, &headers(Some("private"), None, None), now), Freshness::Private);
        assert_eq!(policy.revalidated(stored, &headers(Some("no-store"), None, None), now), Freshness::NoStore);
        // An Expires in the 304 replaces the stored Expires, but max-age still wins over it.
        let expires = headers(None, Some("Thu, 03 Jan 2030 00:00:00 GMT"), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        let with_expires = policy.revalidated(stored, &expires, now);
        assert_eq!((with_expires.ttl(), inputs_of(with_expires).expires_lifetime), (Some(2 * HOUR), Some(2 * 86_400)));
        let only_expires = FreshnessInputs::default();
        assert_eq!(policy.revalidated(only_expires, &expires, now).ttl(), Some(2 * DAY));
        // Nothing known (an entry from before format version 2): the default lifetime, as before.
        assert_eq!(policy.revalidated(only_expires, &UpstreamHeaders::default(), now).ttl(), Some(7 * DAY));
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let manual = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000));
        let clock = manual.clock();
        assert_eq!(clock.unix_now(), 1_000);
        assert_eq!(clock.unix_now(), 1_000);
        manual.clone().advance(Duration::from_secs(61));
        assert_eq!(clock.clone().unix_now(), 1_061);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
