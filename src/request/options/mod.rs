//! Transform options: the `width=300,fit=cover,format=auto` path segment, parsed into typed values and
//! printed back in one canonical form (aliases resolved, keys sorted, defaults dropped), so that every
//! spelling of one transform shares one cache entry.
//!
//! One table, [`OPTIONS`], says everything about each key: its name and aliases, what values it takes, its
//! default, an example, how a value is parsed and how it is printed back. Parsing, the canonical form, the 400
//! messages and the README's option table (checked by a test) all come from it.

mod table;
#[cfg(test)]
mod tests;

use std::fmt;

pub use table::{Allowed, OPTIONS, OptionKey, OptionSpec, OptionsError};
use table::{CANONICAL_ORDER, DPR_ONE};

/// Largest width or height a request may ask for, after `dpr`.
pub const MAX_DIMENSION: u32 = 8192;

/// Options being parsed: `dpr` is kept apart until it is folded into the size.
struct Draft {
    options: TransformOptions,
    dpr: Tenths,
}

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

/// Everything a transform request can ask for. Only [`TransformOptions::parse`] makes one with values (the
/// default is the no-op), so every value is in range; the fields are read through the accessors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct TransformOptions {
    width: Option<u32>,
    height: Option<u32>,
    fit: Fit,
    gravity: Gravity,
    quality: Option<u8>,
    format: FormatChoice,
    background: Option<Rgba>,
    blur: Option<Tenths>,
    sharpen: Option<Tenths>,
    rotate: Option<Rotate>,
}

impl TransformOptions {
    /// Parses a comma-separated `key=value` list (already percent-decoded).
    pub fn parse(segment: &str) -> Result<TransformOptions, OptionsError> {
        let mut seen: Vec<OptionKey> = Vec::new();
        let mut draft = Draft { options: TransformOptions::default(), dpr: DPR_ONE };
        for pair in segment.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
            let (raw_key, value) = match pair.split_once('=') {
                Some((key, value)) => (key.trim(), value.trim()),
                None => (pair, ""),
            };
            let key =
                OptionKey::from_name(raw_key).ok_or_else(|| OptionsError::UnknownKey { key: raw_key.to_owned() })?;
            if seen.contains(&key) {
                return Err(OptionsError::Duplicate { key });
            }
            seen.push(key);
            if value.is_empty() {
                return Err(OptionsError::MissingValue { key });
            }
            let spec = key.spec();
            (spec.set)(&mut draft, &spec.allowed, value)
                .ok_or_else(|| OptionsError::BadValue { key, value: value.to_owned() })?;
        }
        let Draft { mut options, dpr } = draft;
        // Fold dpr into the dimensions: `w=150,dpr=2` and `w=300` are the same image.
        for (key, dimension) in [(OptionKey::Width, &mut options.width), (OptionKey::Height, &mut options.height)] {
            if let Some(pixels) = *dimension {
                let scaled = (u64::from(pixels) * u64::from(dpr.0)).div_ceil(u64::from(DPR_ONE.0));
                *dimension = Some(
                    u32::try_from(scaled)
                        .ok()
                        .filter(|&s| s <= MAX_DIMENSION)
                        .ok_or(OptionsError::TooLargeAfterDpr { key, pixels, dpr })?,
                );
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
        for spec in CANONICAL_ORDER.iter() {
            let start = out.len();
            if start > 0 {
                out.push(',');
            }
            out.push_str(spec.name);
            out.push('=');
            if !(spec.print)(self, &mut out) {
                out.truncate(start);
            }
        }
        out
    }

    /// Target width in pixels, `dpr` already applied.
    pub fn width(&self) -> Option<u32> {
        self.width
    }

    /// Target height in pixels, `dpr` already applied.
    pub fn height(&self) -> Option<u32> {
        self.height
    }

    /// Fit mode.
    pub fn fit(&self) -> Fit {
        self.fit
    }

    /// Crop anchor.
    pub fn gravity(&self) -> Gravity {
        self.gravity
    }

    /// Encoder quality 1..=100; `None` means the format's default.
    pub fn quality(&self) -> Option<u8> {
        self.quality
    }

    /// Output format.
    pub fn format(&self) -> FormatChoice {
        self.format
    }

    /// Padding and alpha-flattening colour; `None` means white.
    pub fn background(&self) -> Option<Rgba> {
        self.background
    }

    /// Gaussian blur sigma, 0.3..=100.
    pub fn blur(&self) -> Option<Tenths> {
        self.blur
    }

    /// Sharpening amount, 0..=10 (0 is dropped).
    pub fn sharpen(&self) -> Option<Tenths> {
        self.sharpen
    }

    /// Extra rotation.
    pub fn rotate(&self) -> Option<Rotate> {
        self.rotate
    }
}

/// Gives a value enum its one list of names: `ALL` and `NAMES` (what 400s and the README list, in this order),
/// `name()` (an exhaustive match, so a new variant without a name does not compile) and `from_name()`.
macro_rules! named_values {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order messages and the README list them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            /// The canonical names of [`Self::ALL`], in the same order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The canonical name.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            /// The value a canonical name stands for, case-insensitively.
            fn from_name(value: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|candidate| candidate.name().eq_ignore_ascii_case(value))
            }
        }
    };
}

named_values!(Fit {
    ScaleDown => "scale-down",
    Contain => "contain",
    Cover => "cover",
    Crop => "crop",
    Pad => "pad",
    Fill => "fill",
});

named_values!(Gravity {
    Center => "center",
    Top => "top",
    Bottom => "bottom",
    Left => "left",
    Right => "right",
    TopLeft => "top-left",
    TopRight => "top-right",
    BottomLeft => "bottom-left",
    BottomRight => "bottom-right",
});

named_values!(FormatChoice {
    Auto => "auto",
    Jpeg => "jpeg",
    Png => "png",
    Webp => "webp",
    Avif => "avif",
    Gif => "gif",
    Original => "original",
});

named_values!(Rotate {
    Deg90 => "90",
    Deg180 => "180",
    Deg270 => "270",
});

impl Fit {
    fn parse(value: &str) -> Option<Fit> {
        Fit::from_name(value)
    }
}

impl Gravity {
    fn parse(value: &str) -> Option<Gravity> {
        // The British spelling is accepted too, never printed.
        if value.eq_ignore_ascii_case("centre") { Some(Gravity::Center) } else { Gravity::from_name(value) }
    }
}

impl FormatChoice {
    fn parse(value: &str) -> Option<FormatChoice> {
        // `jpg` is accepted too, never printed.
        if value.eq_ignore_ascii_case("jpg") { Some(FormatChoice::Jpeg) } else { FormatChoice::from_name(value) }
    }
}

impl Rotate {
    fn parse(value: &str) -> Option<Rotate> {
        Rotate::from_name(value)
    }

    /// Clockwise degrees.
    pub fn degrees(self) -> u16 {
        match self {
            Rotate::Deg90 => 90,
            Rotate::Deg180 => 180,
            Rotate::Deg270 => 270,
        }
    }
}

/// A decimal with at most one fractional digit, as tenths.
fn parse_tenths(value: &str) -> Option<Tenths> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
    let fraction = fraction.trim_end_matches('0');
    let fraction = if fraction.is_empty() { "0" } else { fraction };
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || fraction.len() > 1 {
        return None;
    }
    let tenths = whole.parse::<u16>().ok()?.checked_mul(10)?.checked_add(fraction.parse::<u16>().ok()?)?;
    Some(Tenths(tenths))
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
