//! Property tests of the untrusted-input parsers, in the normal suite (few cases, so they stay fast; the
//! cargo-fuzz targets under fuzz/ go further).

use std::net::{IpAddr, Ipv4Addr};

use mirage::fetch::NetworkPolicy;
use mirage::request::{Route, RouteContext, Target, parse_route, parse_route_in};
use mirage::transform::probe;
use proptest::prelude::*;

/// Text shaped like targets: schemes, hosts in odd spellings, userinfo, ports, escapes.
fn target_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just(""),
        Just("http://"),
        Just("https://"),
        Just("HTTP://"),
        Just("http%3A%2F%2F"),
        Just("ftp://")
    ];
    let host = prop_oneof![
        Just("example.com".to_owned()),
        Just("127.0.0.1".to_owned()),
        Just("[::1]".to_owned()),
        Just("0x7f.1".to_owned()),
        Just("user:pw@host".to_owned()),
        "[a-z0-9.%-]{0,12}",
    ];
    let rest = "[a-zA-Z0-9/?&=#%:@.\\[\\]_ -]{0,24}";
    (scheme, host, rest).prop_map(|(s, h, r)| format!("{s}{h}{r}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn target_parse_never_panics_and_canonical_targets_reparse_to_themselves(raw in prop_oneof![target_like(), "\\PC{0,40}"]) {
        if let Ok(target) = Target::parse(&raw) {
            prop_assert!(matches!(target.url().scheme(), "http" | "https"));
            prop_assert!(target.url().host().is_some());
            let again = Target::parse(target.canonical());
            prop_assert_eq!(again.as_ref().map(Target::canonical), Ok(target.canonical()));
        }
    }

    /// The server's own parser: never panics, and the canonical signed path of what it parsed reads back as
    /// the same request.
    #[test]
    fn parse_route_never_panics_and_round_trips(
        path in prop_oneof![
            "/[a-z=,0-9.%-]{0,30}/",
            "/(w|width|h|q|dpr|sig|blur)=[0-9.]{1,4}(,(f|fit|g|bg)=(auto|webp|cover|top|fff))?/",
            "[a-z/=,0-9.%-]{0,30}",
            Just("/".to_owned()),
            Just("/healthz".to_owned()),
        ],
        raw in target_like(),
        accept in proptest::option::of("[a-z/*,;=.0-9]{0,20}"),
    ) {
        if let Ok(Route::Image { request, .. }) = parse_route(&path, &raw, accept.as_deref()) {
            let signed = request.signed_path("x");
            let (again_path, again_query) = signed.split_once('?').unwrap_or((&signed, ""));
            let again = parse_route(again_path, again_query, accept.as_deref());
            prop_assert_eq!(again, Ok(Route::Image { request, signature: Some("x".to_owned()) }), "{}", signed);
        }
    }

    /// The dialects' parsers: never panic on paths shaped like theirs (or like nothing), and what a dialect reads
    /// is a request whose native spelling reads back as the same request (a dialect says only what native can).
    #[test]
    fn dialects_never_panic_and_read_native_requests(
        path in prop_oneof![
            "/(unsafe|insecure|_)/[a-z0-9:x().,%@=_-]{0,12}(/[a-z0-9:x().,%@=_-]{0,12}){0,3}/(plain/)?(http://)?[a-z.]{1,8}/[a-z0-9.@%]{0,10}",
            "/cdn-cgi/image/[a-z=,0-9.%-]{0,20}/[a-z0-9:/.%?=]{0,24}",
            "/[A-Za-z0-9_-]{27}=/[a-z0-9x:/().]{0,30}",
            "/[A-Za-z0-9_-]{43}/[a-z0-9:/@.]{0,30}",
            "\\PC{0,40}",
        ],
        query in prop_oneof![
            "url=[a-z.:/%]{0,20}(&(w|h|fit|we|a|output|q|bg|blur|sharp|ro|dpr|maxage|default)=[a-z0-9.%:-]{0,8}){0,4}",
            "[a-z0-9=&%:/.]{0,30}",
        ],
    ) {
        let context = RouteContext::all(Some("https://site.example/".parse().expect("origin")));
        let path = if path.starts_with('/') { path } else { format!("/{path}") };
        let candidates = [parse_route_in(&context, &path, &query, None), parse_route_in(&context, "/", &query, None)];
        for parsed in candidates {
            if let Ok(Route::Dialect(dialect)) = parsed {
                let native = dialect.request.path_for(dialect.request.target.canonical());
                let (native_path, native_query) = native.split_once('?').unwrap_or((&native, ""));
                match parse_route(native_path, native_query, None) {
                    Ok(Route::Image { request, signature: None }) => prop_assert_eq!(request, dialect.request.clone()),
                    other => prop_assert!(false, "{} read back as {:?}", native, other),
                }
            }
        }
    }

    #[test]
    fn probe_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(info) = probe(&bytes) {
            prop_assert!(info.width > 0 && info.height > 0);
        }
    }

    #[test]
    fn probe_never_panics_on_mangled_image_headers(
        magic in prop_oneof![
            Just(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec()),
            Just(b"GIF89a".to_vec()),
            Just(b"\xff\xd8\xff".to_vec()),
            Just(b"RIFF\0\0\0\0WEBPVP8X".to_vec()),
        ],
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = magic;
        bytes.extend(tail);
        let _ = probe(&bytes);
    }

    /// The IPv4-mapped form of an address is judged exactly like the address itself.
    #[test]
    fn mapped_ipv6_is_judged_like_its_ipv4(octets in any::<[u8; 4]>()) {
        let policy = NetworkPolicy::default();
        let v4 = Ipv4Addr::from(octets);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        prop_assert_eq!(policy.check(IpAddr::V4(v4)).is_ok(), policy.check(mapped).is_ok(), "{}", v4);
    }

    /// Nothing in loopback, RFC 1918, link-local or CGNAT is ever allowed by default.
    #[test]
    fn internal_ranges_are_always_refused(low in any::<u16>(), pick in 0usize..6) {
        let [x, y] = low.to_be_bytes();
        let ip = match pick {
            0 => Ipv4Addr::new(127, x, y, 1),
            1 => Ipv4Addr::new(10, x, y, 1),
            2 => Ipv4Addr::new(172, 16 + (x % 16), y, 1),
            3 => Ipv4Addr::new(192, 168, x, y),
            4 => Ipv4Addr::new(169, 254, x, y),
            _ => Ipv4Addr::new(100, 64 + (x % 64), y, 1),
        };
        prop_assert!(NetworkPolicy::default().check(IpAddr::V4(ip)).is_err(), "{}", ip);
    }
}
