//! The option table: one row per key, with everything about it (name, aliases, values, default, example,
//! value parser and printer), and the errors whose messages it words.

use std::fmt::{self, Write as _};
use std::sync::LazyLock;

use super::{
    Draft, Fit, FormatChoice, Gravity, MAX_DIMENSION, Rgba, Rotate, Tenths, TransformOptions, parse_colour,
    parse_tenths,
};
use crate::request::SIGNATURE_KEY;

/// A transform option's key; its aliases and values are in its [`OptionSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionKey {
    /// `width`, `w`.
    Width,
    /// `height`, `h`.
    Height,
    /// `fit`.
    Fit,
    /// `gravity`, `g`.
    Gravity,
    /// `quality`, `q`.
    Quality,
    /// `format`, `f`.
    Format,
    /// `dpr`: folded into width and height, never printed.
    Dpr,
    /// `background`, `bg`.
    Background,
    /// `blur`.
    Blur,
    /// `sharpen`.
    Sharpen,
    /// `rotate`.
    Rotate,
}

impl OptionKey {
    /// This key's row of [`OPTIONS`].
    pub fn spec(self) -> &'static OptionSpec {
        // An exhaustive match: a new key without a row does not compile (an index past the table's end is a
        // compile-time error too); a test checks that every row sits at its key's position.
        let row = match self {
            OptionKey::Width => 0,
            OptionKey::Height => 1,
            OptionKey::Fit => 2,
            OptionKey::Gravity => 3,
            OptionKey::Quality => 4,
            OptionKey::Format => 5,
            OptionKey::Dpr => 6,
            OptionKey::Background => 7,
            OptionKey::Blur => 8,
            OptionKey::Sharpen => 9,
            OptionKey::Rotate => 10,
        };
        &OPTIONS[row]
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The key a name or alias stands for, case-insensitively.
    pub fn from_name(text: &str) -> Option<OptionKey> {
        OPTIONS
            .iter()
            .find(|spec| {
                spec.name.eq_ignore_ascii_case(text)
                    || spec.aliases.iter().any(|alias| alias.eq_ignore_ascii_case(text))
            })
            .map(|spec| spec.key)
    }
}

impl fmt::Display for OptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The values an option takes: checks a value, and is what a 400 and the README say is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Whole numbers in `min..=max`.
    Integer {
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// Decimals with at most one fractional digit in `min..=max`; `hint` follows the range in messages.
    Decimal {
        /// Smallest allowed.
        min: Tenths,
        /// Largest allowed.
        max: Tenths,
        /// Extra words after the range (may be empty).
        hint: &'static str,
    },
    /// One of these words, case-insensitively (a few values have an unlisted second spelling, e.g. `centre`).
    Words(&'static [&'static str]),
    /// A hexadecimal colour in one of these forms, with or without `#`.
    HexColour(&'static [&'static str]),
}

impl Allowed {
    /// `value` as a whole number in range.
    fn integer(&self, value: &str) -> Option<u32> {
        let Allowed::Integer { min, max } = *self else { return None };
        if !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 6 {
            return None;
        }
        value.parse().ok().filter(|n| (min..=max).contains(n))
    }

    /// `value` as a decimal with at most one fractional digit, in range.
    fn decimal(&self, value: &str) -> Option<Tenths> {
        let Allowed::Decimal { min, max, .. } = *self else { return None };
        parse_tenths(value).filter(|tenths| (min..=max).contains(tenths))
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Integer { min, max } => write!(f, "{min}..{max}"),
            Allowed::Decimal { min, max, hint } => write!(f, "{min}..{max}{hint}"),
            Allowed::Words(words) => write_list(f, words),
            Allowed::HexColour(forms) => {
                f.write_str("hex ")?;
                write_list(f, forms)?;
                f.write_str(", e.g. ff0000")
            }
        }
    }
}

/// `a, b or c`.
fn write_list(f: &mut fmt::Formatter<'_>, words: &[&str]) -> fmt::Result {
    for (i, word) in words.iter().enumerate() {
        match i {
            0 => {}
            i if i + 1 == words.len() => f.write_str(" or ")?,
            _ => f.write_str(", ")?,
        }
        f.write_str(word)?;
    }
    Ok(())
}

/// Everything about one option key.
pub struct OptionSpec {
    /// The key.
    pub key: OptionKey,
    /// The canonical name, the one the canonical form prints.
    pub name: &'static str,
    /// Other spellings of the name.
    pub aliases: &'static [&'static str],
    /// The values it takes.
    pub allowed: Allowed,
    /// What applies when it is not given, in words.
    pub default: &'static str,
    /// A valid `key=value`.
    pub example: &'static str,
    /// Parses a value into the draft; `None` when the value is not allowed.
    pub(super) set: fn(&mut Draft, &Allowed, &str) -> Option<()>,
    /// Appends the canonical value to the text; `false` (and nothing appended) when the option is at its default.
    pub(super) print: fn(&TransformOptions, &mut String) -> bool,
}

impl fmt::Debug for OptionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionSpec").field("name", &self.name).field("allowed", &self.allowed).finish_non_exhaustive()
    }
}

/// `dpr` when not given: 1.
pub(super) const DPR_ONE: Tenths = Tenths(10);

/// The option table, in [`OptionKey`] declaration order (the order messages list the keys in).
pub static OPTIONS: [OptionSpec; 11] = [
    OptionSpec {
        key: OptionKey::Width,
        name: "width",
        aliases: &["w"],
        allowed: Allowed::Integer { min: 1, max: MAX_DIMENSION },
        default: "source width",
        example: "width=300",
        set: |draft, allowed, value| {
            draft.options.width = Some(allowed.integer(value)?);
            Some(())
        },
        print: |options, out| options.width.is_some_and(|width| write!(out, "{width}").is_ok()),
    },
    OptionSpec {
        key: OptionKey::Height,
        name: "height",
        aliases: &["h"],
        allowed: Allowed::Integer { min: 1, max: MAX_DIMENSION },
        default: "source height",
        example: "height=200",
        set: |draft, allowed, value| {
            draft.options.height = Some(allowed.integer(value)?);
            Some(())
        },
        print: |options, out| options.height.is_some_and(|height| write!(out, "{height}").is_ok()),
    },
    OptionSpec {
        key: OptionKey::Fit,
        name: "fit",
        aliases: &[],
        allowed: Allowed::Words(Fit::NAMES),
        default: "scale-down",
        example: "fit=cover",
        set: |draft, _, value| {
            draft.options.fit = Fit::parse(value)?;
            Some(())
        },
        print: |options, out| options.fit != Fit::default() && write!(out, "{}", options.fit.name()).is_ok(),
    },
    OptionSpec {
        key: OptionKey::Gravity,
        name: "gravity",
        aliases: &["g"],
        allowed: Allowed::Words(Gravity::NAMES),
        default: "center",
        example: "gravity=top",
        set: |draft, _, value| {
            draft.options.gravity = Gravity::parse(value)?;
            Some(())
        },
        print: |options, out| {
            options.gravity != Gravity::default() && write!(out, "{}", options.gravity.name()).is_ok()
        },
    },
    OptionSpec {
        key: OptionKey::Quality,
        name: "quality",
        aliases: &["q"],
        allowed: Allowed::Integer { min: 1, max: 100 },
        // The encoders' defaults (`OutputFormat::default_quality`).
        default: "JPEG and AVIF 82, WebP 80",
        example: "quality=80",
        set: |draft, allowed, value| {
            draft.options.quality = Some(u8::try_from(allowed.integer(value)?).ok()?);
            Some(())
        },
        print: |options, out| options.quality.is_some_and(|quality| write!(out, "{quality}").is_ok()),
    },
    OptionSpec {
        key: OptionKey::Format,
        name: "format",
        aliases: &["f"],
        allowed: Allowed::Words(FormatChoice::NAMES),
        default: "original",
        example: "format=auto",
        set: |draft, _, value| {
            draft.options.format = FormatChoice::parse(value)?;
            Some(())
        },
        print: |options, out| {
            options.format != FormatChoice::default() && write!(out, "{}", options.format.name()).is_ok()
        },
    },
    OptionSpec {
        key: OptionKey::Dpr,
        name: "dpr",
        aliases: &[],
        allowed: Allowed::Decimal { min: DPR_ONE, max: Tenths(40), hint: ", e.g. 2 or 1.5" },
        default: "1",
        example: "dpr=2",
        set: |draft, allowed, value| {
            draft.dpr = allowed.decimal(value)?;
            Some(())
        },
        // Folded into width and height: `w=150,dpr=2` is `w=300`.
        print: |_, _| false,
    },
    OptionSpec {
        key: OptionKey::Background,
        name: "background",
        aliases: &["bg"],
        allowed: Allowed::HexColour(&["rgb", "rrggbb", "rrggbbaa"]),
        default: "ffffff",
        example: "background=ffffff",
        set: |draft, _, value| {
            draft.options.background = Some(parse_colour(value)?);
            Some(())
        },
        print: |options, out| {
            options.background.is_some_and(|Rgba([r, g, b, a])| {
                let written = write!(out, "{r:02x}{g:02x}{b:02x}");
                // Opaque colours print as rrggbb: the shortest spelling of one colour is its only one.
                written.is_ok() && (a == 255 || write!(out, "{a:02x}").is_ok())
            })
        },
    },
    OptionSpec {
        key: OptionKey::Blur,
        name: "blur",
        aliases: &[],
        allowed: Allowed::Decimal { min: Tenths(3), max: Tenths(1000), hint: "" },
        default: "none",
        example: "blur=5",
        set: |draft, allowed, value| {
            draft.options.blur = Some(allowed.decimal(value)?);
            Some(())
        },
        print: |options, out| options.blur.is_some_and(|blur| write!(out, "{blur}").is_ok()),
    },
    OptionSpec {
        key: OptionKey::Sharpen,
        name: "sharpen",
        aliases: &[],
        allowed: Allowed::Decimal { min: Tenths(0), max: Tenths(100), hint: "" },
        default: "0",
        example: "sharpen=1",
        set: |draft, allowed, value| {
            draft.options.sharpen = Some(allowed.decimal(value)?);
            Some(())
        },
        print: |options, out| options.sharpen.is_some_and(|sharpen| write!(out, "{sharpen}").is_ok()),
    },
    OptionSpec {
        key: OptionKey::Rotate,
        name: "rotate",
        aliases: &[],
        allowed: Allowed::Words(Rotate::NAMES),
        default: "none",
        example: "rotate=90",
        set: |draft, _, value| {
            draft.options.rotate = Some(Rotate::parse(value)?);
            Some(())
        },
        print: |options, out| options.rotate.is_some_and(|rotate| write!(out, "{}", rotate.degrees()).is_ok()),
    },
];

/// The table sorted by name: the order of the canonical form.
pub(super) static CANONICAL_ORDER: LazyLock<Vec<&'static OptionSpec>> = LazyLock::new(|| {
    let mut specs: Vec<&'static OptionSpec> = OPTIONS.iter().collect();
    specs.sort_by_key(|spec| spec.name);
    specs
});

/// `width (w), height (h), fit, ...`: the keys a message lists as known.
struct KnownKeys;

impl fmt::Display for KnownKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, spec) in OPTIONS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(spec.name)?;
            if !spec.aliases.is_empty() {
                write!(f, " ({})", spec.aliases.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Why an options segment was refused (each becomes a 400 naming the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A key that is not one of ours.
    #[error("unknown option {key:?}; known options: {known}", known = KnownKeys)]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// The same option twice (through an alias too).
    #[error("option \"{key}\" is given more than once")]
    Duplicate {
        /// The option.
        key: OptionKey,
    },
    /// `key` without `=value`, or with an empty value.
    #[error("option \"{key}\" needs a value, e.g. {example}", example = .key.spec().example)]
    MissingValue {
        /// The option.
        key: OptionKey,
    },
    /// A value that does not parse or is out of range.
    #[error("bad value {value:?} for option \"{key}\": expected {allowed}", allowed = .key.spec().allowed)]
    BadValue {
        /// The option.
        key: OptionKey,
        /// The value as written.
        value: String,
    },
    /// `width` or `height` in range, but not once multiplied by `dpr`.
    #[error("bad value \"{pixels} x dpr {dpr}\" for option \"{key}\": expected at most {max} pixels after dpr",
        max = MAX_DIMENSION)]
    TooLargeAfterDpr {
        /// `width` or `height`.
        key: OptionKey,
        /// The value as written.
        pixels: u32,
        /// The `dpr` it was multiplied by.
        dpr: Tenths,
    },
    /// `sig` twice: which one would be checked is ambiguous.
    #[error("option {key:?} is given more than once", key = SIGNATURE_KEY)]
    DuplicateSignature,
    /// `sig` without a value.
    #[error("option {key:?} needs a value, e.g. {key}=<base64url HMAC-SHA256>", key = SIGNATURE_KEY)]
    MissingSignature,
}
