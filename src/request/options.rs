//! Transform options: the `width=300,fit=cover,format=auto` path segment, parsed into typed values and
//! printed back in one canonical form (aliases resolved, keys sorted, defaults dropped), so that every
//! spelling of one transform shares one cache entry.

use std::fmt::{self, Write as _};

use super::SIGNATURE_KEY;

/// Largest width or height a request may ask for, after `dpr`.
pub const MAX_DIMENSION: u32 = 8192;

/// Why an options segment was refused (each becomes a 400 naming the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A key that is not one of ours.
    #[error("unknown option {key:?}; known options: {KNOWN_KEYS}")]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// The same option twice (through an alias too).
    #[error("option {key:?} is given more than once")]
    Duplicate {
        /// The canonical key.
        key: &'static str,
    },
    /// `key` without `=value`, or with an empty value.
    #[error("option {key:?} needs a value, e.g. {example}")]
    MissingValue {
        /// The canonical key.
        key: &'static str,
        /// A valid example.
        example: &'static str,
    },
    /// A value that does not parse or is out of range.
    #[error("bad value {value:?} for option {key:?}: expected {allowed}")]
    BadValue {
        /// The canonical key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// `sig` twice: which one would be checked is ambiguous.
    #[error("option {key:?} is given more than once", key = SIGNATURE_KEY)]
    DuplicateSignature,
    /// `sig` without a value.
    #[error("option {key:?} needs a value, e.g. {key}=<base64url HMAC-SHA256>", key = SIGNATURE_KEY)]
    MissingSignature,
}

const KNOWN_KEYS: &str =
    "width (w), height (h), fit, gravity (g), quality (q), format (f), dpr, background (bg), blur, sharpen, rotate";

/// How the image is fitted into `width` x `height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Fit {
    /// Shrink to fit inside, never enlarge (the default).
    #[default]
    ScaleDown,
    /// Fit inside, enlarging if needed.
    Contain,
    /// Fill the box exactly, cropping the overflow (by `gravity`).
    Cover,
    /// Like cover, but never enlarge.
    Crop,
    /// Contain, then pad to exactly the box with `background`.
    Pad,
    /// Stretch to exactly the box, ignoring the aspect ratio.
    Fill,
}

/// Which part of the image a crop keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Gravity {
    /// The middle (the default).
    #[default]
    Center,
    /// Top edge, horizontally centred.
    Top,
    /// Bottom edge, horizontally centred.
    Bottom,
    /// Left edge, vertically centred.
    Left,
    /// Right edge, vertically centred.
    Right,
    /// Top-left corner.
    TopLeft,
    /// Top-right corner.
    TopRight,
    /// Bottom-left corner.
    BottomLeft,
    /// Bottom-right corner.
    BottomRight,
}

/// The output format asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum FormatChoice {
    /// The source's own format (the default).
    #[default]
    Original,
    /// The best format the client's `Accept` allows.
    Auto,
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP (lossy).
    Webp,
    /// AVIF.
    Avif,
    /// GIF.
    Gif,
}

/// A right-angle rotation, applied after EXIF orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rotate {
    /// 90 degrees clockwise.
    Deg90,
    /// 180 degrees.
    Deg180,
    /// 270 degrees clockwise.
    Deg270,
}

/// An sRGB colour with alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgba(pub [u8; 4]);

impl Rgba {
    /// Opaque white: the default `background`.
    pub const WHITE: Rgba = Rgba([255, 255, 255, 255]);
}

/// A value in tenths, so that canonical forms print exactly and compare exactly (`blur=0.3`, `dpr=1.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenths(pub u16);

impl Tenths {
    /// As a float.
    pub fn get(self) -> f32 {
        f32::from(self.0) / 10.0
    }
}

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 % 10 {
            0 => write!(f, "{}", self.0 / 10),
            tenth => write!(f, "{}.{}", self.0 / 10, tenth),
        }
    }
}

/// Everything a transform request can ask for. Only `parse` makes one, so every value is in range.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct TransformOptions {
    /// Target width in pixels, `dpr` already applied.
    pub width: Option<u32>,
    /// Target height in pixels, `dpr` already applied.
    pub height: Option<u32>,
    /// Fit mode.
    pub fit: Fit,
    /// Crop anchor.
    pub gravity: Gravity,
    /// Encoder quality 1..=100; `None` means the format's default.
    pub quality: Option<u8>,
    /// Output format.
    pub format: FormatChoice,
    /// Padding and alpha-flattening colour; `None` means white.
    pub background: Option<Rgba>,
    /// Gaussian blur sigma, 0.3..=100.
    pub blur: Option<Tenths>,
    /// Sharpening amount, 0..=10 (0 is dropped).
    pub sharpen: Option<Tenths>,
    /// Extra rotation.
    pub rotate: Option<Rotate>,
}

impl TransformOptions {
    /// Parses a comma-separated `key=value` list (already percent-decoded).
    pub fn parse(segment: &str) -> Result<TransformOptions, OptionsError> {
        let mut seen: Vec<&'static str> = Vec::new();
        let mut options = TransformOptions::default();
        let mut dpr = Tenths(10);
        for pair in segment.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let (raw_key, value) = match pair.split_once('=') {
                Some((key, value)) => (key.trim(), value.trim()),
                None => (pair, ""),
            };
            let key = canonical_key(raw_key).ok_or_else(|| OptionsError::UnknownKey { key: raw_key.to_owned() })?;
            if seen.contains(&key) {
                return Err(OptionsError::Duplicate { key });
            }
            seen.push(key);
            if value.is_empty() {
                return Err(OptionsError::MissingValue { key, example: example(key) });
            }
            let bad = |allowed: &'static str| OptionsError::BadValue { key, value: value.to_owned(), allowed };
            match key {
                "width" => options.width = Some(parse_int(value, 1, MAX_DIMENSION).ok_or_else(|| bad("1..8192"))?),
                "height" => options.height = Some(parse_int(value, 1, MAX_DIMENSION).ok_or_else(|| bad("1..8192"))?),
                "fit" => options.fit = parse_fit(value).ok_or_else(|| bad(FITS))?,
                "gravity" => options.gravity = parse_gravity(value).ok_or_else(|| bad(GRAVITIES))?,
                "quality" => options.quality = Some(parse_int(value, 1, 100).ok_or_else(|| bad("1..100"))? as u8),
                "format" => options.format = parse_format(value).ok_or_else(|| bad(FORMATS))?,
                "dpr" => dpr = parse_tenths(value, 10, 40).ok_or_else(|| bad("1..4, e.g. 2 or 1.5"))?,
                "background" => options.background = Some(parse_colour(value).ok_or_else(|| bad(COLOURS))?),
                "blur" => options.blur = Some(parse_tenths(value, 3, 1000).ok_or_else(|| bad("0.3..100"))?),
                "sharpen" => options.sharpen = Some(parse_tenths(value, 0, 100).ok_or_else(|| bad("0..10"))?),
                "rotate" => options.rotate = Some(parse_rotate(value).ok_or_else(|| bad("90, 180 or 270"))?),
                _ => return Err(OptionsError::UnknownKey { key: raw_key.to_owned() }),
            }
        }
        // Fold dpr into the dimensions: `w=150,dpr=2` and `w=300` are the same image.
        for (name, dimension) in [("width", &mut options.width), ("height", &mut options.height)] {
            if let Some(pixels) = dimension {
                let scaled = (u64::from(*pixels) * u64::from(dpr.0)).div_ceil(10);
                *dimension =
                    Some(u32::try_from(scaled).ok().filter(|&s| s <= MAX_DIMENSION).ok_or(OptionsError::BadValue {
                        key: name,
                        value: format!("{pixels} x dpr {dpr}"),
                        allowed: "at most 8192 pixels after dpr",
                    })?);
            }
        }
        if options.sharpen == Some(Tenths(0)) {
            options.sharpen = None;
        }
        if options.background == Some(Rgba::WHITE) {
            options.background = None;
        }
        Ok(options)
    }

    /// The canonical spelling: sorted keys, full names, defaults left out. Empty for "no transform".
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        let mut put = |key: &str, value: &dyn fmt::Display| {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{key}={value}");
        };
        if let Some(Rgba([r, g, b, a])) = self.background {
            let hex = if a == 255 { format!("{r:02x}{g:02x}{b:02x}") } else { format!("{r:02x}{g:02x}{b:02x}{a:02x}") };
            put("background", &hex);
        }
        if let Some(blur) = self.blur {
            put("blur", &blur);
        }
        if self.fit != Fit::ScaleDown {
            put("fit", &fit_name(self.fit));
        }
        if self.format != FormatChoice::Original {
            put("format", &format_name(self.format));
        }
        if self.gravity != Gravity::Center {
            put("gravity", &gravity_name(self.gravity));
        }
        if let Some(height) = self.height {
            put("height", &height);
        }
        if let Some(quality) = self.quality {
            put("quality", &quality);
        }
        if let Some(rotate) = self.rotate {
            put("rotate", &rotate_degrees(rotate));
        }
        if let Some(sharpen) = self.sharpen {
            put("sharpen", &sharpen);
        }
        if let Some(width) = self.width {
            put("width", &width);
        }
        out
    }
}

const FITS: &str = "scale-down, contain, cover, crop, pad or fill";
const GRAVITIES: &str = "center, top, bottom, left, right, top-left, top-right, bottom-left or bottom-right";
const FORMATS: &str = "auto, jpeg, png, webp, avif, gif or original";
const COLOURS: &str = "hex rgb, rrggbb or rrggbbaa, e.g. ff0000";

fn canonical_key(key: &str) -> Option<&'static str> {
    Some(match key.to_ascii_lowercase().as_str() {
        "width" | "w" => "width",
        "height" | "h" => "height",
        "fit" => "fit",
        "gravity" | "g" => "gravity",
        "quality" | "q" => "quality",
        "format" | "f" => "format",
        "dpr" => "dpr",
        "background" | "bg" => "background",
        "blur" => "blur",
        "sharpen" => "sharpen",
        "rotate" => "rotate",
        _ => return None,
    })
}

fn example(key: &str) -> &'static str {
    match key {
        "width" => "width=300",
        "height" => "height=200",
        "fit" => "fit=cover",
        "gravity" => "gravity=top",
        "quality" => "quality=80",
        "format" => "format=auto",
        "dpr" => "dpr=2",
        "background" => "background=ffffff",
        "blur" => "blur=5",
        "sharpen" => "sharpen=1",
        _ => "rotate=90",
    }
}

fn parse_int(value: &str, min: u32, max: u32) -> Option<u32> {
    if !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 6 {
        return None;
    }
    value.parse().ok().filter(|n| (min..=max).contains(n))
}

/// A decimal with at most one fractional digit, as tenths within `min..=max`.
fn parse_tenths(value: &str, min: u16, max: u16) -> Option<Tenths> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
    let fraction = fraction.trim_end_matches('0');
    let fraction = if fraction.is_empty() { "0" } else { fraction };
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || fraction.len() > 1 {
        return None;
    }
    let tenths = whole.parse::<u16>().ok()?.checked_mul(10)?.checked_add(fraction.parse::<u16>().ok()?)?;
    (min..=max).contains(&tenths).then_some(Tenths(tenths))
}

fn parse_fit(value: &str) -> Option<Fit> {
    Some(match value.to_ascii_lowercase().as_str() {
        "scale-down" => Fit::ScaleDown,
        "contain" => Fit::Contain,
        "cover" => Fit::Cover,
        "crop" => Fit::Crop,
        "pad" => Fit::Pad,
        "fill" => Fit::Fill,
        _ => return None,
    })
}

fn fit_name(fit: Fit) -> &'static str {
    match fit {
        Fit::ScaleDown => "scale-down",
        Fit::Contain => "contain",
        Fit::Cover => "cover",
        Fit::Crop => "crop",
        Fit::Pad => "pad",
        Fit::Fill => "fill",
    }
}

fn parse_gravity(value: &str) -> Option<Gravity> {
    Some(match value.to_ascii_lowercase().as_str() {
        "center" | "centre" => Gravity::Center,
        "top" => Gravity::Top,
        "bottom" => Gravity::Bottom,
        "left" => Gravity::Left,
        "right" => Gravity::Right,
        "top-left" => Gravity::TopLeft,
        "top-right" => Gravity::TopRight,
        "bottom-left" => Gravity::BottomLeft,
        "bottom-right" => Gravity::BottomRight,
        _ => return None,
    })
}

fn gravity_name(gravity: Gravity) -> &'static str {
    match gravity {
        Gravity::Center => "center",
        Gravity::Top => "top",
        Gravity::Bottom => "bottom",
        Gravity::Left => "left",
        Gravity::Right => "right",
        Gravity::TopLeft => "top-left",
        Gravity::TopRight => "top-right",
        Gravity::BottomLeft => "bottom-left",
        Gravity::BottomRight => "bottom-right",
    }
}

fn parse_format(value: &str) -> Option<FormatChoice> {
    Some(match value.to_ascii_lowercase().as_str() {
        "original" => FormatChoice::Original,
        "auto" => FormatChoice::Auto,
        "jpeg" | "jpg" => FormatChoice::Jpeg,
        "png" => FormatChoice::Png,
        "webp" => FormatChoice::Webp,
        "avif" => FormatChoice::Avif,
        "gif" => FormatChoice::Gif,
        _ => return None,
    })
}

fn format_name(format: FormatChoice) -> &'static str {
    match format {
        FormatChoice::Original => "original",
        FormatChoice::Auto => "auto",
        FormatChoice::Jpeg => "jpeg",
        FormatChoice::Png => "png",
        FormatChoice::Webp => "webp",
        FormatChoice::Avif => "avif",
        FormatChoice::Gif => "gif",
    }
}

fn parse_rotate(value: &str) -> Option<Rotate> {
    Some(match value {
        "90" => Rotate::Deg90,
        "180" => Rotate::Deg180,
        "270" => Rotate::Deg270,
        _ => return None,
    })
}

fn rotate_degrees(rotate: Rotate) -> u16 {
    match rotate {
        Rotate::Deg90 => 90,
        Rotate::Deg180 => 180,
        Rotate::Deg270 => 270,
    }
}

fn parse_colour(value: &str) -> Option<Rgba> {
    let hex = value.strip_prefix('#').unwrap_or(value);
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let nibble = |i: usize| u8::from_str_radix(&hex[i..=i], 16).ok();
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    match hex.len() {
        3 => Some(Rgba([nibble(0)? * 17, nibble(1)? * 17, nibble(2)? * 17, 255])),
        6 => Some(Rgba([byte(0)?, byte(2)?, byte(4)?, 255])),
        8 => Some(Rgba([byte(0)?, byte(2)?, byte(4)?, byte(6)?])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(segment: &str) -> String {
        TransformOptions::parse(segment).map(|o| o.canonical()).unwrap_or_else(|e| format!("ERR {e}"))
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

    #[test]
    fn errors_name_the_key_and_the_allowed_values() {
        let error = TransformOptions::parse("width=0").expect_err("out of range");
        assert!(error.to_string().contains("\"width\"") && error.to_string().contains("1..8192"), "{error}");
        let error = TransformOptions::parse("fit=squash").expect_err("bad fit");
        assert!(error.to_string().contains("scale-down, contain, cover"), "{error}");
        assert_eq!(TransformOptions::parse("w=1,width=2"), Err(OptionsError::Duplicate { key: "width" }));
        assert_eq!(TransformOptions::parse("zoom=2"), Err(OptionsError::UnknownKey { key: "zoom".into() }));
        assert!(matches!(TransformOptions::parse("width"), Err(OptionsError::MissingValue { key: "width", .. })));
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
                prop_oneof![
                    Just("scale-down"),
                    Just("contain"),
                    Just("cover"),
                    Just("crop"),
                    Just("pad"),
                    Just("fill")
                ]
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
}
