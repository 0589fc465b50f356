//! thumbor: `/unsafe/[fit-in/][W]x[H]/[halign/][valign/][filters:f(a):g(b)/]{image}` and the same behind an
//! HMAC-SHA1 signature instead of `unsafe`.
//!
//! The parts are read in thumbor's order; each is recognised by its shape, and the first part that is none of
//! them starts the image URL (which may lack a scheme: `my.server.com/a.jpg` means `http://`, as thumbor's HTTP
//! loader reads it). The signature is kept with the text it covers ([`DialectSignature::Thumbor`]) and verified
//! by `crate::signing` with `--thumbor-key`.

use super::{Dialect, DialectError, DialectRequest, DialectSignature, NativeOptions, source_target};
use crate::request::{ImageRequest, RequestError};

const THUMBOR: Dialect = Dialect::Thumbor;

/// Length of thumbor's signature: urlsafe base64 of 20 bytes, with its one `=` of padding.
const SIGNATURE_LEN: usize = 28;

/// Whether a first path segment is thumbor's: `unsafe` or an urlsafe base64 HMAC-SHA1 (with padding).
pub fn is_signature_segment(segment: &str) -> bool {
    segment == "unsafe"
        || (segment.len() == SIGNATURE_LEN
            && segment.ends_with('=')
            && segment[..SIGNATURE_LEN - 1].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// `WxH` with optional `-` flips: `300x200`, `300x`, `x200`, `-300x200`, `0x0`.
fn size(segment: &str) -> Option<(bool, &str, bool, &str)> {
    let (width, height) = segment.split_once('x')?;
    let (flip_x, width) = width.strip_prefix('-').map_or((false, width), |w| (true, w));
    let (flip_y, height) = height.strip_prefix('-').map_or((false, height), |h| (true, h));
    let digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit()) || text == "orig";
    (digits(width) && digits(height)).then_some((flip_x, width, flip_y, height))
}

/// `AxB:CxD`: a manual crop.
fn is_crop(segment: &str) -> bool {
    segment.split_once(':').is_some_and(|(a, b)| {
        let corner = |text: &str| {
            text.split_once('x').is_some_and(|(x, y)| x.parse::<u32>().is_ok() && y.parse::<u32>().is_ok())
        };
        corner(a) && corner(b)
    })
}

fn dimension(value: &str) -> Result<u32, DialectError> {
    match value {
        "" => Ok(0),
        "orig" => Err(DialectError::value(THUMBOR, "size", value, "give the size in pixels")),
        digits => digits.parse().map_err(|_| DialectError::value(THUMBOR, "size", digits, "expected pixels")),
    }
}

/// A colour as thumbor's `fill` takes it: hex, or a few CSS names.
fn colour(value: &str) -> Result<String, DialectError> {
    let named = match value {
        "white" => Some("ffffff"),
        "black" => Some("000000"),
        "red" => Some("ff0000"),
        "green" => Some("008000"),
        "blue" => Some("0000ff"),
        "gray" | "grey" => Some("808080"),
        "yellow" => Some("ffff00"),
        _ => None,
    };
    if let Some(hex) = named {
        return Ok(hex.to_owned());
    }
    let hex = value.strip_prefix('#').unwrap_or(value);
    if matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_owned())
    } else {
        Err(DialectError::value(
            THUMBOR,
            "fill",
            value,
            "expected a hex colour or a basic colour name (no auto, blur, transparent)",
        ))
    }
}

/// The options being read.
struct Draft {
    native: NativeOptions,
    fit_in: bool,
    fill: bool,
    /// `filters:upscale()`: `fit-in` may enlarge.
    upscale: bool,
}

/// `filters:name(args):name(args)`.
fn filters(draft: &mut Draft, list: &str) -> Result<(), DialectError> {
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('(')
            .ok_or_else(|| DialectError::new(THUMBOR, rest, "a filter is written name(arguments)"))?;
        let (args, after) =
            after.split_once(')').ok_or_else(|| DialectError::new(THUMBOR, name, "the filter's ( is not closed"))?;
        rest = after.strip_prefix(':').unwrap_or(after);
        let first = args.split(',').next().unwrap_or_default().trim();
        match name {
            "quality" => draft.native.set("quality", "quality", first),
            "format" => {
                let format = match first {
                    "jpeg" | "jpg" => "jpeg",
                    "png" | "webp" | "gif" | "avif" => first,
                    other => {
                        return Err(DialectError::value(
                            THUMBOR,
                            "format",
                            other,
                            "expected jpeg, png, webp, gif or avif",
                        ));
                    }
                };
                draft.native.set("format", "format", format);
            }
            "fill" => {
                draft.native.set("fill", "background", colour(first)?);
                draft.fill = true;
            }
            "upscale" => draft.upscale = true,
            "blur" => {
                // blur(radius[, sigma]): the sigma is the radius unless given; Mirage's blur is the sigma.
                let sigma = args.split(',').nth(1).map_or(first, str::trim);
                if first == "0" {
                    draft.native.unset("blur");
                } else {
                    draft.native.set("blur", "blur", sigma);
                }
            }
            other => return Err(DialectError::unsupported(THUMBOR, other)),
        }
    }
    Ok(())
}

/// Reads `/{unsafe|signature}/...` (the caller checked [`is_signature_segment`] on the first segment); `query`
/// belongs to the image URL.
pub fn parse(path: &str, query: &str, accept: Option<&str>) -> Result<DialectRequest, RequestError> {
    let Some((signature, rest)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Err(DialectError::new(THUMBOR, "path", "expected /unsafe/{options}/{image}").into());
    };
    let signed_path = if query.is_empty() { rest.to_owned() } else { format!("{rest}?{query}") };
    let mut draft = Draft { native: NativeOptions::new(THUMBOR), fit_in: false, fill: false, upscale: false };
    let (mut width, mut height) = (0, 0);
    let (mut halign, mut valign) = ("center", "middle");
    let segments: Vec<&str> = rest.split('/').collect();
    let mut image_at = 0;
    for segment in &segments {
        match *segment {
            "meta" | "smart" | "full-fit-in" | "adaptive-fit-in" | "adaptive-full-fit-in" => {
                return Err(DialectError::unsupported(THUMBOR, segment).into());
            }
            "fit-in" => draft.fit_in = true,
            "left" | "right" => halign = segment,
            "top" | "bottom" => valign = segment,
            "center" | "middle" => {}
            trim if trim == "trim" || trim.starts_with("trim:") => {
                return Err(DialectError::unsupported(THUMBOR, "trim").into());
            }
            crop if is_crop(crop) => return Err(DialectError::unsupported(THUMBOR, crop).into()),
            list if list.starts_with("filters:") => filters(&mut draft, &list["filters:".len()..])?,
            other => match size(other) {
                Some((false, w, false, h)) => (width, height) = (dimension(w)?, dimension(h)?),
                Some(_) => {
                    return Err(
                        DialectError::value(THUMBOR, "size", other, "Mirage does not flip images (-W or -H)").into()
                    );
                }
                None => break,
            },
        }
        image_at += 1;
    }
    let image = segments[image_at..].join("/");
    let image = if query.is_empty() { image } else { format!("{image}?{query}") };
    let target = source_target(THUMBOR, "image", &image, Some("http"))?;
    if width > 0 {
        draft.native.set("size", "width", width);
    }
    if height > 0 {
        draft.native.set("size", "height", height);
    }
    if width > 0 || height > 0 {
        // thumbor crops to the exact box unless `fit-in`, enlarging by default (its UPSCALE setting); `fit-in`
        // never enlarges unless `filters:upscale()` says so.
        let fit = match (draft.fit_in, width > 0 && height > 0) {
            (true, true) if draft.fill => "pad",
            (true, _) if draft.upscale => "contain",
            (true, _) => "scale-down",
            (false, true) => "cover",
            (false, false) => "contain",
        };
        draft.native.set("fit-in", "fit", fit);
    }
    let gravity = match (valign, halign) {
        ("middle", "center") => None,
        ("middle", side) | (side, "center") => Some(side.to_owned()),
        (vertical, horizontal) => Some(format!("{vertical}-{horizontal}")),
    };
    if let Some(gravity) = gravity {
        draft.native.set("halign", "gravity", gravity);
    }
    let request = ImageRequest::from_options(draft.native.finish()?, target, accept);
    let signature =
        DialectSignature::Thumbor { signature: (signature != "unsafe").then(|| signature.to_owned()), signed_path };
    Ok(DialectRequest::plain(THUMBOR, request, signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Route, RouteContext, parse_route_in};

    /// The canonical native spelling of a thumbor path.
    fn canonical(path: &str) -> Result<String, String> {
        match parse_route_in(&RouteContext::all(None), path, "", None) {
            Ok(Route::Dialect(dialect)) => {
                assert_eq!(dialect.dialect, Dialect::Thumbor);
                Ok(dialect.request.signing_message())
            }
            Ok(other) => Err(format!("not thumbor: {other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    const IMAGE: &str = "my.server.com/some/path/to/image.jpg";

    /// Paths in the forms of thumbor's documentation ("Usage", "Filters", "Security") and the canonical request of
    /// each.
    #[test]
    fn documentation_examples_map_to_native_requests() {
        let want = |options: &str| format!("{options}/?http://{IMAGE}");
        let table = [
            (format!("/unsafe/300x200/{IMAGE}"), want("fit=cover,height=200,width=300")),
            (format!("/unsafe/300x200/smart/{IMAGE}"), "thumbor parameter \"smart\": not supported by Mirage (see the README, \"URL dialects\")".to_owned()),
            (format!("/unsafe/fit-in/300x200/{IMAGE}"), want("height=200,width=300")),
            (format!("/unsafe/fit-in/300x200/filters:upscale()/{IMAGE}"), want("fit=contain,height=200,width=300")),
            (format!("/unsafe/300x0/{IMAGE}"), want("fit=contain,width=300")),
            (format!("/unsafe/x200/{IMAGE}"), want("fit=contain,height=200")),
            (format!("/unsafe/-300x200/{IMAGE}"), "thumbor parameter \"size\": value \"-300x200\" is not supported: Mirage does not flip images (-W or -H)".to_owned()),
            (format!("/unsafe/300x200/left/top/{IMAGE}"), want("fit=cover,gravity=top-left,height=200,width=300")),
            (format!("/unsafe/300x200/right/{IMAGE}"), want("fit=cover,gravity=right,height=200,width=300")),
            (format!("/unsafe/300x200/center/bottom/{IMAGE}"), want("fit=cover,gravity=bottom,height=200,width=300")),
            (format!("/unsafe/filters:quality(40)/{IMAGE}"), want("quality=40")),
            (format!("/unsafe/300x200/filters:format(webp)/{IMAGE}"), want("fit=cover,format=webp,height=200,width=300")),
            (format!("/unsafe/fit-in/300x200/filters:fill(blue)/{IMAGE}"), want("background=0000ff,fit=pad,height=200,width=300")),
            (format!("/unsafe/fit-in/300x200/filters:fill(auto)/{IMAGE}"), "thumbor parameter \"fill\": value \"auto\" is not supported: expected a hex colour or a basic colour name (no auto, blur, transparent)".to_owned()),
            (format!("/unsafe/filters:blur(7)/{IMAGE}"), want("blur=7")),
            (format!("/unsafe/filters:blur(7,2)/{IMAGE}"), want("blur=2")),
            (format!("/unsafe/300x200/filters:quality(80):format(jpeg):blur(3)/{IMAGE}"), want("blur=3,fit=cover,format=jpeg,height=200,width=300,quality=80").replace("height=200,width=300,quality=80", "height=200,quality=80,width=300")),
            (format!("/unsafe/filters:grayscale()/{IMAGE}"), "thumbor parameter \"grayscale\": not supported by Mirage (see the README, \"URL dialects\")".to_owned()),
            (format!("/unsafe/10x10:290x290/{IMAGE}"), "thumbor parameter \"10x10:290x290\": not supported by Mirage (see the README, \"URL dialects\")".to_owned()),
            (format!("/unsafe/trim/{IMAGE}"), "thumbor parameter \"trim\": not supported by Mirage (see the README, \"URL dialects\")".to_owned()),
            (format!("/unsafe/meta/{IMAGE}"), "thumbor parameter \"meta\": not supported by Mirage (see the README, \"URL dialects\")".to_owned()),
            (format!("/unsafe/{IMAGE}"), format!("/?http://{IMAGE}")),
            ("/unsafe/300x200/https://h.example/a.jpg".to_owned(), "fit=cover,height=200,width=300/?https://h.example/a.jpg".to_owned()),
            ("/unsafe/300x200/https%3A%2F%2Fh.example%2Fa.jpg".to_owned(), "fit=cover,height=200,width=300/?https://h.example/a.jpg".to_owned()),
            ("/unsafe/300x200/".to_owned(), "thumbor parameter \"image\": the image URL is missing".to_owned()),
        ];
        for (path, expected) in &table {
            assert_eq!(&canonical(path).unwrap_or_else(|error| error), expected, "{path}");
        }
    }

    #[test]
    fn the_signature_and_the_text_it_covers_are_kept() {
        // thumbor's security documentation: the HMAC covers everything after `/{signature}/`.
        let Ok(Route::Dialect(dialect)) = parse_route_in(
            &RouteContext::all(None),
            &format!("/OHHMqHwGrH1gubkMMveC8Ireg7A=/300x200/{IMAGE}"),
            "",
            None,
        ) else {
            panic!("thumbor");
        };
        assert_eq!(
            dialect.signature,
            DialectSignature::Thumbor {
                signature: Some("OHHMqHwGrH1gubkMMveC8Ireg7A=".to_owned()),
                signed_path: format!("300x200/{IMAGE}"),
            }
        );
        let Ok(Route::Dialect(unsafe_one)) = parse_route_in(&RouteContext::all(None), "/unsafe/h/a.jpg", "v=2", None)
        else {
            panic!("thumbor");
        };
        assert_eq!(
            unsafe_one.signature,
            DialectSignature::Thumbor { signature: None, signed_path: "h/a.jpg?v=2".to_owned() }
        );
        assert_eq!(unsafe_one.request.target.to_string(), "http://h/a.jpg?v=2");
        assert!(!is_signature_segment("insecure") && !is_signature_segment("OHHMqHwGrH1gubkMMveC8Ireg7A"));
    }
}
