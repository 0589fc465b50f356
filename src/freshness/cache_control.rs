//! `Cache-Control` as RFC 9110 and 9111 define it: every field line, list syntax with quoted strings, and the
//! most restrictive value when a directive repeats.

/// The `Cache-Control` directives that matter to a shared cache, read from every field line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`: keep nothing.
    pub no_store: bool,
    /// `private` (qualified or not, as nginx and Varnish treat it): a shared cache keeps nothing.
    pub private: bool,
    /// `no-cache` (qualified or not): stored, but revalidated before every reuse.
    pub no_cache: bool,
    /// `must-revalidate`, or `proxy-revalidate`, which says the same to a shared cache: never served stale.
    pub must_revalidate: bool,
    /// `max-age` in seconds.
    pub max_age: Option<u64>,
    /// `s-maxage` in seconds: a shared cache's own `max-age`.
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate` in seconds (RFC 5861): how long past expiry a copy may answer at once while it
    /// is revalidated in the background.
    pub stale_while_revalidate: Option<u64>,
}

/// RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2^31.
const DELTA_SECONDS_CAP: u64 = 1 << 31;

impl CacheControl {
    /// Parses a `Cache-Control` value (all field lines joined with commas) with RFC 9110 list syntax: elements
    /// separated by commas, empty ones skipped, arguments as tokens or quoted strings (which may hold commas and
    /// `\` escapes). Names are case-insensitive; unknown directives are ignored. When a directive repeats, the most
    /// restrictive value wins (the shortest lifetime); an invalid lifetime (`max-age=soon`) counts as 0, i.e.
    /// stale, as RFC 9111 4.2.1 encourages.
    pub fn parse(value: &str) -> CacheControl {
        let mut parsed = CacheControl::default();
        let mut rest = value;
        while !rest.is_empty() {
            let (name, argument, after) = next_directive(rest);
            rest = after;
            let seconds = || delta_seconds(argument.as_deref());
            let shortest = |current: Option<u64>, new: u64| Some(current.map_or(new, |c| c.min(new)));
            match name.to_ascii_lowercase().as_str() {
                "no-store" => parsed.no_store = true,
                "private" => parsed.private = true,
                "no-cache" => parsed.no_cache = true,
                "must-revalidate" | "proxy-revalidate" => parsed.must_revalidate = true,
                "max-age" => parsed.max_age = shortest(parsed.max_age, seconds()),
                "s-maxage" => parsed.s_maxage = shortest(parsed.s_maxage, seconds()),
                "stale-while-revalidate" => {
                    parsed.stale_while_revalidate = shortest(parsed.stale_while_revalidate, seconds());
                }
                _ => {}
            }
        }
        parsed
    }
}

/// Splits the first list element off `input`: its name, its argument (unquoted) and what follows its comma.
fn next_directive(input: &str) -> (&str, Option<String>, &str) {
    let input = input.trim_start_matches([' ', '\t', ',']);
    let name_end = input.find(['=', ',']).unwrap_or(input.len());
    let name = input[..name_end].trim();
    let rest = &input[name_end..];
    let Some(rest) = rest.strip_prefix('=') else {
        return (name, None, rest);
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut argument = String::new();
        let mut chars = quoted.char_indices();
        let mut end = quoted.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    end = at + 1;
                    break;
                }
                '\\' => argument.extend(chars.next().map(|(_, escaped)| escaped)),
                c => argument.push(c),
            }
        }
        // Anything between the closing quote and the next comma is malformed and skipped.
        let after = &quoted[end..];
        let after = after.find(',').map_or("", |comma| &after[comma..]);
        return (name, Some(argument), after);
    }
    let end = rest.find(',').unwrap_or(rest.len());
    (name, Some(rest[..end].trim().to_owned()), &rest[end..])
}

/// A delta-seconds argument (RFC 9111 1.2.2); anything but digits is invalid and counts as 0.
fn delta_seconds(argument: Option<&str>) -> u64 {
    match argument {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<u64>().map_or(DELTA_SECONDS_CAP, |n| n.min(DELTA_SECONDS_CAP))
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_follows_list_syntax() {
        let parsed = CacheControl::parse(" , Public,MAX-AGE=600 ,, x=\"a, no-store, \\\" private\", must-revalidate");
        let expected = CacheControl { must_revalidate: true, max_age: Some(600), ..CacheControl::default() };
        assert_eq!(parsed, expected);
        // Quoted arguments are accepted for lifetimes too, and garbage after a closing quote is skipped.
        assert_eq!(CacheControl::parse("max-age=\"60\"junk, no-store").max_age, Some(60));
        assert!(CacheControl::parse("max-age=\"60\"junk, no-store").no_store);
        assert!(CacheControl::parse("community=\"unterminated, no-store").eq(&CacheControl::default()));
        assert!(CacheControl::parse("proxy-revalidate").must_revalidate);
        assert!(CacheControl::parse("private=\"set-cookie\"").private);
        assert!(CacheControl::parse("no-cache=\"set-cookie, foo\"").no_cache);
    }

    #[test]
    fn repeated_directives_take_the_most_restrictive_value() {
        let parsed = CacheControl::parse("public, max-age=600, max-age=60, s-maxage=10, s-maxage=100");
        assert_eq!((parsed.max_age, parsed.s_maxage), (Some(60), Some(10)));
        // Invalid lifetimes count as zero (stale); a huge one is capped at 2^31 (RFC 9111 1.2.2).
        assert_eq!(CacheControl::parse("max-age=soon").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age=-5").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age").max_age, Some(0));
        assert_eq!(CacheControl::parse("max-age=99999999999999999999999").max_age, Some(1 << 31));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// One well-formed directive: the ones we read, in any case, and unknown ones with quoted arguments that
        /// hold commas and the names of real directives.
        fn directive() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("no-store".to_owned()),
                Just("No-Cache".to_owned()),
                Just("PRIVATE".to_owned()),
                Just("public".to_owned()),
                Just("must-revalidate".to_owned()),
                (0u64..100_000).prop_map(|n| format!("max-age={n}")),
                (0u64..100_000).prop_map(|n| format!("Max-Age=\"{n}\"")),
                "[a-z]{1,8}".prop_map(|name| format!("{name}=\"no-store, private, max-age=0\"")),
            ]
        }

        /// What the list says, element by element, without parsing the joined text.
        fn expected(lines: &[Vec<String>]) -> CacheControl {
            let mut parsed = CacheControl::default();
            for element in lines.iter().flatten() {
                if element.contains('"') && !element.to_ascii_lowercase().starts_with("max-age") {
                    continue;
                }
                let one = CacheControl::parse(element);
                parsed.no_store |= one.no_store;
                parsed.no_cache |= one.no_cache;
                parsed.private |= one.private;
                parsed.must_revalidate |= one.must_revalidate;
                parsed.max_age = match (parsed.max_age, one.max_age) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            parsed
        }

        proptest! {
            #[test]
            fn never_panics_on_any_text(value in ".{0,200}") {
                let _ = CacheControl::parse(&value);
            }

            #[test]
            fn every_line_counts_and_quoted_text_never_does(
                lines in proptest::collection::vec(proptest::collection::vec(directive(), 0..4), 1..4),
            ) {
                // As the fetcher joins header lines: ", " between them.
                let joined = lines.iter().map(|line| line.join(", ")).collect::<Vec<_>>().join(", ");
                prop_assert_eq!(CacheControl::parse(&joined), expected(&lines));
            }
        }
    }
}
