//! Unit and property tests of the options grammar, its table and the README's copy of that table.

use super::*;
use crate::request::SIGNATURE_KEY;

fn canonical(segment: &str) -> String {
    TransformOptions::parse(segment).map_or_else(|e| format!("ERR {e}"), |o| o.canonical())
}

#[test]
fn aliases_and_defaults_share_one_canonical_form() {
    assert_eq!(canonical("w=300"), "width=300");
    assert_eq!(canonical("width=300,fit=scale-down"), "width=300");
    assert_eq!(canonical("fit=scale-down,gravity=center,format=original,w=300,bg=fff,sharpen=0"), "width=300");
    assert_eq!(canonical("w=150,dpr=2"), "width=300");
    assert_eq!(
        canonical("q=80,f=webp,h=200,g=top-left,fit=cover"),
        "fit=cover,format=webp,gravity=top-left,height=200,quality=80"
    );
    assert_eq!(
        canonical("bg=FF000080,blur=2.50,rotate=90,sharpen=1.5"),
        "background=ff000080,blur=2.5,rotate=90,sharpen=1.5"
    );
}

/// Canonical forms key the cache (and signatures): these must never change, or every existing cache entry
/// and signed URL is lost.
#[test]
fn canonical_forms_are_pinned() {
    let pinned = [
        ("w=300", "width=300"),
        ("h=200,w=300,dpr=1.5", "height=300,width=450"),
        ("fit=COVER,g=Bottom-Right,f=jpg,q=60", "fit=cover,format=jpeg,gravity=bottom-right,quality=60"),
        ("f=auto,fit=pad,bg=#0F0,w=10,h=10", "background=00ff00,fit=pad,format=auto,height=10,width=10"),
        ("bg=11223344,blur=0.30,sharpen=10,rotate=270", "background=11223344,blur=0.3,rotate=270,sharpen=10"),
        ("g=centre,fit=scale-down,format=original,bg=ffffffff,sharpen=0.0,dpr=1", ""),
        ("fit=contain,fit=x", "ERR option \"fit\" is given more than once"),
    ];
    for (segment, expected) in pinned {
        assert_eq!(canonical(segment), expected, "{segment}");
    }
}

/// The 400 messages, word for word.
#[test]
fn messages_are_pinned() {
    let pinned = [
        (
            "zoom=2",
            "unknown option \"zoom\"; known options: width (w), height (h), fit, gravity (g), quality (q), \
             format (f), dpr, background (bg), blur, sharpen, rotate",
        ),
        ("w=1,width=2", "option \"width\" is given more than once"),
        ("bg", "option \"background\" needs a value, e.g. background=ffffff"),
        ("h=", "option \"height\" needs a value, e.g. height=200"),
        ("w=0", "bad value \"0\" for option \"width\": expected 1..8192"),
        ("h=9000", "bad value \"9000\" for option \"height\": expected 1..8192"),
        (
            "fit=squash",
            "bad value \"squash\" for option \"fit\": expected scale-down, contain, cover, crop, pad or fill",
        ),
        (
            "g=middle",
            "bad value \"middle\" for option \"gravity\": expected center, top, bottom, left, right, top-left, \
             top-right, bottom-left or bottom-right",
        ),
        ("q=101", "bad value \"101\" for option \"quality\": expected 1..100"),
        ("f=bmp", "bad value \"bmp\" for option \"format\": expected auto, jpeg, png, webp, avif, gif or original"),
        ("dpr=5", "bad value \"5\" for option \"dpr\": expected 1..4, e.g. 2 or 1.5"),
        ("bg=ggg", "bad value \"ggg\" for option \"background\": expected hex rgb, rrggbb or rrggbbaa, e.g. ff0000"),
        ("blur=0.2", "bad value \"0.2\" for option \"blur\": expected 0.3..100"),
        ("sharpen=11", "bad value \"11\" for option \"sharpen\": expected 0..10"),
        ("rotate=45", "bad value \"45\" for option \"rotate\": expected 90, 180 or 270"),
        ("w=4100,dpr=2", "bad value \"4100 x dpr 2\" for option \"width\": expected at most 8192 pixels after dpr"),
        (
            "dpr=1.5,h=6000",
            "bad value \"6000 x dpr 1.5\" for option \"height\": expected at most 8192 pixels after dpr",
        ),
    ];
    for (segment, expected) in pinned {
        assert_eq!(canonical(segment), format!("ERR {expected}"), "{segment}");
    }
}

#[test]
fn table_rows_are_in_key_order_and_names_are_unique() {
    for spec in &OPTIONS {
        assert!(std::ptr::eq(spec.key.spec(), spec), "{spec:?} is not its key's row");
        assert_eq!(spec.key.spec().name, spec.name);
        for name in std::iter::once(&spec.name).chain(spec.aliases) {
            assert_eq!(OptionKey::from_name(name), Some(spec.key), "{name}");
            assert_eq!(OptionKey::from_name(&name.to_ascii_uppercase()), Some(spec.key), "{name}");
        }
    }
    assert_eq!(OptionKey::from_name(SIGNATURE_KEY), None, "sig is not a transform option");
}

/// Every value the table lists is one the parser takes, and the range ends are exactly the range.
#[test]
fn table_values_agree_with_the_parsers() {
    for spec in &OPTIONS {
        let name = spec.name;
        let accepted = |value: &dyn fmt::Display| TransformOptions::parse(&format!("{name}={value}")).is_ok();
        match spec.allowed {
            Allowed::Integer { min, max } => {
                assert!(accepted(&min) && accepted(&max), "{name}");
                assert!(!accepted(&(max + 1)) && (min == 0 || !accepted(&(min - 1))), "{name}");
            }
            Allowed::Decimal { min, max, .. } => {
                assert!(accepted(&min) && accepted(&max), "{name}");
                assert!(!accepted(&Tenths(max.0 + 1)) && (min.0 == 0 || !accepted(&Tenths(min.0 - 1))), "{name}");
            }
            Allowed::Words(words) => {
                let mut printed: Vec<String> = words.iter().map(|word| canonical(&format!("{name}={word}"))).collect();
                for (word, printed) in words.iter().zip(&printed) {
                    // Each word prints as itself, or as nothing when it is the default.
                    assert!(printed.is_empty() || *printed == format!("{name}={word}"), "{name}={word}: {printed}");
                }
                printed.sort();
                printed.dedup();
                assert_eq!(printed.len(), words.len(), "{name}: every word is a different value");
            }
            Allowed::HexColour(forms) => {
                for form in forms {
                    let digits: String = form.chars().map(|c| if c == 'a' { '8' } else { '1' }).collect();
                    assert!(accepted(&digits), "{name}={digits}");
                }
            }
        }
        assert!(TransformOptions::parse(spec.example).is_ok(), "{}", spec.example);
        assert!(spec.example.starts_with(&format!("{name}=")), "{}", spec.example);
    }
}

/// The README's "Transform options" table says what the table says: keys, aliases, allowed values,
/// defaults, and examples the server parses.
#[test]
fn readme_options_table_matches_the_table() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let section = readme.split("## Transform options").nth(1).expect("README has a Transform options section");
    let rows: Vec<Vec<&str>> = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let code = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    let mut names = Vec::new();
    for row in &rows {
        let [keys, values, default, example] = row[..] else { panic!("README row {row:?} has not 4 cells") };
        let keys = code(keys);
        let spec = OptionKey::from_name(&keys[0]).map(OptionKey::spec).expect("README names a known option");
        assert_eq!(keys[0], spec.name, "README names {} by its full name", spec.name);
        assert_eq!(keys[1..], *spec.aliases, "README aliases of {}", spec.name);
        let listed: Vec<String> = match spec.allowed {
            Allowed::Integer { min, max } => vec![format!("{min}..{max}")],
            Allowed::Decimal { min, max, .. } => vec![format!("{min}..{max}")],
            Allowed::Words(words) | Allowed::HexColour(words) => words.iter().map(|w| format!("`{w}`")).collect(),
        };
        for text in listed {
            assert!(values.contains(&text), "README values of {} lack {text}: {values}", spec.name);
        }
        assert_eq!(default.replace('`', ""), spec.default, "README default of {}", spec.name);
        let example = code(example).into_iter().next().expect("README row has an example");
        let example = example.replace("{url}", "http://h/a.jpg");
        let (path, query) = example.split_once('?').expect("README example has a target");
        assert!(crate::request::parse_route(path, query, None).is_ok(), "README example {example}");
        names.push(spec.name);
    }
    let mut table: Vec<&str> = OPTIONS.iter().map(|spec| spec.name).collect();
    table.sort_unstable();
    names.sort_unstable();
    assert_eq!(names, table, "the README lists every option once");
}

#[test]
fn errors_name_the_key_and_the_allowed_values() {
    let error = TransformOptions::parse("width=0").expect_err("out of range");
    assert!(error.to_string().contains("\"width\"") && error.to_string().contains("1..8192"), "{error}");
    let error = TransformOptions::parse("fit=squash").expect_err("bad fit");
    assert!(error.to_string().contains("scale-down, contain, cover"), "{error}");
    assert_eq!(TransformOptions::parse("w=1,width=2"), Err(OptionsError::Duplicate { key: OptionKey::Width }));
    assert_eq!(TransformOptions::parse("zoom=2"), Err(OptionsError::UnknownKey { key: "zoom".into() }));
    assert!(matches!(TransformOptions::parse("width"), Err(OptionsError::MissingValue { key: OptionKey::Width })));
    for bad in [
        "width=8193",
        "height=-1",
        "quality=101",
        "quality=0",
        "dpr=5",
        "dpr=0.5",
        "blur=0.2",
        "blur=101",
        "sharpen=11",
        "rotate=45",
        "bg=12345",
        "bg=ggg",
        "format=bmp",
        "gravity=middle",
        "width=1e3",
        "width=+5",
        "w=4100,dpr=2",
        "dpr=1.25",
    ] {
        assert!(TransformOptions::parse(bad).is_err(), "{bad} should be refused");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;

    /// Well-formed option pairs, in any spelling (aliases, case, dpr), so that most generated segments parse.
    fn pair() -> impl Strategy<Value = String> {
        prop_oneof![
            (prop_oneof![Just("width"), Just("w"), Just("W")], 1u32..9000).prop_map(|(k, v)| format!("{k}={v}")),
            (prop_oneof![Just("height"), Just("h")], 0u32..9000).prop_map(|(k, v)| format!("{k}={v}")),
            prop_oneof![Just("scale-down"), Just("contain"), Just("cover"), Just("crop"), Just("pad"), Just("fill")]
                .prop_map(|v| format!("fit={v}")),
            prop_oneof![Just("center"), Just("top"), Just("bottom-right"), Just("left"), Just("top-left")]
                .prop_map(|v| format!("g={v}")),
            (0u32..120).prop_map(|v| format!("q={v}")),
            prop_oneof![Just("auto"), Just("jpeg"), Just("png"), Just("webp"), Just("gif"), Just("original")]
                .prop_map(|v| format!("format={v}")),
            (1u32..45).prop_map(|v| format!("dpr={}.{}", v / 10, v % 10)),
            "[0-9a-fA-F]{3,8}".prop_map(|v| format!("bg={v}")),
            (0u32..1100).prop_map(|v| format!("blur={}.{}", v / 10, v % 10)),
            (0u32..120).prop_map(|v| format!("sharpen={}", v / 10)),
            prop_oneof![Just("90"), Just("180"), Just("270"), Just("45")].prop_map(|v| format!("rotate={v}")),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(segment in ".{0,200}") {
            let _ = TransformOptions::parse(&segment);
        }

        #[test]
        fn never_panics_on_option_like_text(segment in "([a-z]{1,10}=[-+.#0-9a-zA-Z]{0,12},?){0,8}") {
            let _ = TransformOptions::parse(&segment);
        }

        #[test]
        fn canonical_form_round_trips(pairs in proptest::collection::vec(pair(), 0..8)) {
            let segment = pairs.join(",");
            if let Ok(options) = TransformOptions::parse(&segment) {
                let canonical = options.canonical();
                let reparsed = TransformOptions::parse(&canonical);
                prop_assert_eq!(reparsed.as_ref(), Ok(&options), "segment {} canonical {}", segment, canonical);
                prop_assert_eq!(reparsed.map(|o| o.canonical()), Ok(canonical));
            }
        }

        #[test]
        fn key_order_does_not_matter(pairs in proptest::collection::vec(pair(), 1..6)) {
            let forward = TransformOptions::parse(&pairs.join(","));
            let mut reversed = pairs.clone();
            reversed.reverse();
            // Errors may name a different offending pair; the verdict and any result must agree.
            prop_assert_eq!(forward.ok(), TransformOptions::parse(&reversed.join(",")).ok());
        }
    }
}
