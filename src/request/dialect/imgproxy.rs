//! imgproxy: `/{signature}/{processing options}/plain/{source}@{ext}` and
//! `/{signature}/{processing options}/{base64url source}.{ext}` (the base64 may be split by `/`), plus the basic
//! form `/{signature}/{resizing type}/{width}/{height}/{gravity}/{enlarge}/{base64url source}.{ext}`.
//!
//! Options are `name:arg:arg` segments, applied in order (a later one wins). The signature segment is kept with
//! the path it covers ([`DialectSignature::Imgproxy`]) and verified by `crate::signing` with imgproxy's key and
//! salt; parsing never looks at it beyond recognising the path.

use percent_encoding::percent_decode_str;

use super::{Dialect, DialectError, DialectRequest, DialectSignature, NativeOptions, source_target};
use crate::request::{ImageRequest, RequestError, Target};
use crate::signing::base64url_decode;

const IMGPROXY: Dialect = Dialect::Imgproxy;

/// Length of an unpadded base64url HMAC-SHA256.
const SIGNATURE_LEN: usize = 43;

/// Whether a first path segment is imgproxy's signature slot: `insecure` or `_` (what URL builders write when
/// signing is off), or a base64url HMAC-SHA256. Anything else is not an imgproxy path.
pub fn is_signature_segment(segment: &str) -> bool {
    segment == "insecure"
        || segment == "_"
        || (segment.len() == SIGNATURE_LEN
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// imgproxy's resizing types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResizingType {
    Fit,
    Fill,
    FillDown,
    Force,
    Auto,
}

impl ResizingType {
    fn parse(parameter: &str, value: &str) -> Result<ResizingType, DialectError> {
        Ok(match value {
            "fit" => ResizingType::Fit,
            "fill" => ResizingType::Fill,
            "fill-down" => ResizingType::FillDown,
            "force" => ResizingType::Force,
            "auto" => ResizingType::Auto,
            other => {
                return Err(DialectError::value(
                    IMGPROXY,
                    parameter,
                    other,
                    "expected fit, fill, fill-down, force or auto",
                ));
            }
        })
    }
}

/// The options being read: size and fit are decided at the end (they depend on each other), the rest goes
/// straight into the native list.
struct Draft {
    native: NativeOptions,
    resizing: ResizingType,
    width: u32,
    height: u32,
    enlarge: bool,
    format: Option<&'static str>,
}

impl Draft {
    /// The native fit for imgproxy's resizing type and `enlarge`. With one side only, every type scales to it.
    fn fit(&self) -> Result<Option<&'static str>, DialectError> {
        if self.width == 0 && self.height == 0 {
            return Ok(None);
        }
        let both = self.width > 0 && self.height > 0;
        let scale = if self.enlarge { "contain" } else { "scale-down" };
        Ok(Some(match self.resizing {
            ResizingType::Fill if both => {
                if self.enlarge {
                    "cover"
                } else {
                    "crop"
                }
            }
            ResizingType::FillDown if both => "crop",
            ResizingType::Force if both => "fill",
            ResizingType::Auto if both => {
                return Err(DialectError::value(
                    IMGPROXY,
                    "resizing_type",
                    "auto",
                    "with both sides it depends on the source's orientation; use fit or fill",
                ));
            }
            _ => scale,
        }))
    }
}

fn number(parameter: &str, value: &str) -> Result<u32, DialectError> {
    value.parse().map_err(|_| DialectError::value(IMGPROXY, parameter, value, "expected a whole number"))
}

fn boolean(parameter: &str, value: &str) -> Result<bool, DialectError> {
    match value {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" | "" => Ok(false),
        other => Err(DialectError::value(IMGPROXY, parameter, other, "expected 1, t, true, 0, f or false")),
    }
}

/// `gravity`/`g`: the compass positions (without offsets); smart, focus-point and object gravity have no native
/// equivalent.
fn gravity(parameter: &str, args: &[&str]) -> Result<&'static str, DialectError> {
    if args.iter().skip(1).any(|offset| !matches!(*offset, "" | "0")) {
        return Err(DialectError::value(IMGPROXY, parameter, &args.join(":"), "Mirage has no gravity offsets"));
    }
    Ok(match args.first().copied().unwrap_or_default() {
        "ce" => "center",
        "no" => "top",
        "so" => "bottom",
        "ea" => "right",
        "we" => "left",
        "noea" => "top-right",
        "nowe" => "top-left",
        "soea" => "bottom-right",
        "sowe" => "bottom-left",
        value @ ("sm" | "fp" | "obj") => {
            return Err(DialectError::value(
                IMGPROXY,
                parameter,
                value,
                "Mirage has no smart, focus-point or object crop yet",
            ));
        }
        other => {
            return Err(DialectError::value(
                IMGPROXY,
                parameter,
                other,
                "expected a compass position (ce, no, so, ea, we, noea, nowe, soea, sowe)",
            ));
        }
    })
}

/// `format`, `f`, `ext` and the URL's extension.
fn format(parameter: &str, value: &str) -> Result<&'static str, DialectError> {
    Ok(match value {
        "jpg" | "jpeg" => "jpeg",
        "png" => "png",
        "webp" => "webp",
        "avif" => "avif",
        "gif" => "gif",
        other => return Err(DialectError::value(IMGPROXY, parameter, other, "expected jpg, png, webp, avif or gif")),
    })
}

/// `background`/`bg`: `R:G:B` in decimal or one hex colour.
fn background(parameter: &str, args: &[&str]) -> Result<String, DialectError> {
    match args {
        [hex] => Ok((*hex).to_owned()),
        [r, g, b] => {
            let channel = |text: &str| {
                text.parse::<u8>().map_err(|_| DialectError::value(IMGPROXY, parameter, text, "expected 0..255"))
            };
            Ok(format!("{:02x}{:02x}{:02x}", channel(r)?, channel(g)?, channel(b)?))
        }
        _ => Err(DialectError::value(IMGPROXY, parameter, &args.join(":"), "expected R:G:B or a hex colour")),
    }
}

/// Applies one `name:args` option.
fn apply(draft: &mut Draft, name: &str, args: &[&str]) -> Result<(), DialectError> {
    let arg = |i: usize| args.get(i).copied().unwrap_or_default();
    let some = |i: usize| args.get(i).copied().filter(|value| !value.is_empty());
    match name {
        "resize" | "rs" | "size" | "s" => {
            // `rs` starts with the resizing type; `s` does not.
            let offset = usize::from(matches!(name, "resize" | "rs"));
            if offset == 1
                && let Some(kind) = some(0)
            {
                draft.resizing = ResizingType::parse(name, kind)?;
            }
            if let Some(width) = some(offset) {
                draft.width = number(name, width)?;
            }
            if let Some(height) = some(offset + 1) {
                draft.height = number(name, height)?;
            }
            if let Some(enlarge) = some(offset + 2) {
                draft.enlarge = boolean(name, enlarge)?;
            }
            if boolean(name, arg(offset + 3))? {
                return Err(DialectError::value(IMGPROXY, name, &args.join(":"), "Mirage does not extend images"));
            }
        }
        "resizing_type" | "rt" => draft.resizing = ResizingType::parse(name, arg(0))?,
        "width" | "w" => draft.width = number(name, arg(0))?,
        "height" | "h" => draft.height = number(name, arg(0))?,
        "enlarge" | "el" => draft.enlarge = boolean(name, arg(0))?,
        "dpr" => draft.native.set(name, "dpr", arg(0)),
        "gravity" | "g" => {
            let position = gravity(name, args)?;
            draft.native.set(name, "gravity", position);
        }
        "quality" | "q" => match number(name, arg(0))? {
            // 0 is imgproxy's "the default".
            0 => draft.native.unset("quality"),
            quality => draft.native.set(name, "quality", quality),
        },
        "format" | "f" | "ext" => draft.format = Some(format(name, arg(0))?),
        "background" | "bg" => {
            let colour = background(name, args)?;
            draft.native.set(name, "background", colour);
        }
        "blur" | "bl" => match arg(0) {
            "0" => draft.native.unset("blur"),
            sigma => draft.native.set(name, "blur", sigma),
        },
        "sharpen" | "sh" => draft.native.set(name, "sharpen", arg(0)),
        "rotate" | "rot" => match arg(0) {
            "0" | "360" => draft.native.unset("rotate"),
            degrees => draft.native.set(name, "rotate", degrees),
        },
        other => return Err(DialectError::unsupported(IMGPROXY, other)),
    }
    Ok(())
}

/// The source of a `plain/{url}@{ext}` path: percent-decoded, with the extension split off.
fn plain_source(text: &str) -> Result<(Target, Option<&str>), DialectError> {
    let (url, extension) = match text.rsplit_once('@') {
        Some((url, ext)) if !ext.is_empty() && ext.bytes().all(|b| b.is_ascii_alphanumeric()) => (url, Some(ext)),
        _ => (text, None),
    };
    let decoded = percent_decode_str(url)
        .decode_utf8()
        .map_err(|_| DialectError::new(IMGPROXY, "plain", "the image URL is not UTF-8 after percent-decoding"))?;
    Ok((source_target(IMGPROXY, "plain", &decoded, None)?, extension))
}

/// The source of a base64url path (its segments joined), with the extension split off.
fn encoded_source<'a>(segments: &[&'a str]) -> Result<(Target, Option<&'a str>), DialectError> {
    let joined = segments.concat();
    let last = segments.last().copied().unwrap_or_default();
    let extension = last.rsplit_once('.').map(|(_, ext)| ext);
    let encoded = match extension {
        Some(ext) => &joined[..joined.len() - ext.len() - 1],
        None => joined.as_str(),
    };
    let bytes = base64url_decode(encoded.trim_end_matches('='))
        .ok_or_else(|| DialectError::new(IMGPROXY, "source", "the image URL is not valid base64url"))?;
    let url = String::from_utf8(bytes)
        .map_err(|_| DialectError::new(IMGPROXY, "source", "the image URL is not UTF-8 after base64 decoding"))?;
    Ok((source_target(IMGPROXY, "source", &url, None)?, extension.filter(|ext| !ext.is_empty())))
}

/// The basic form's five segments, as the options they stand for.
fn basic_form(draft: &mut Draft, segments: &[&str]) -> Result<(), DialectError> {
    let [resizing, width, height, position, enlarge] = segments else {
        return Err(DialectError::new(IMGPROXY, "path", "the basic form has five parts"));
    };
    apply(draft, "rs", &[resizing, width, height, enlarge])?;
    apply(draft, "g", &[position])
}

/// Reads `/{signature}/...` (the caller checked [`is_signature_segment`] on the first segment).
pub fn parse(path: &str, accept: Option<&str>) -> Result<DialectRequest, RequestError> {
    let Some((signature, rest)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Err(DialectError::new(IMGPROXY, "path", "expected /{signature}/{options}/{source}").into());
    };
    let signed_path = format!("/{rest}");
    let segments: Vec<&str> = rest.split('/').collect();
    let mut draft = Draft {
        native: NativeOptions::new(IMGPROXY),
        resizing: ResizingType::Fit,
        width: 0,
        height: 0,
        enlarge: false,
        format: None,
    };
    let basic = segments.len() >= 6
        && ResizingType::parse("", segments[0]).is_ok()
        && segments[1..3].iter().all(|s| s.bytes().all(|b| b.is_ascii_digit()));
    let source_at = if basic {
        basic_form(&mut draft, &segments[..5])?;
        5
    } else {
        let options = segments.iter().take_while(|segment| segment.contains(':')).count();
        for segment in &segments[..options] {
            let mut parts = segment.split(':');
            let name = parts.next().unwrap_or_default();
            let args: Vec<&str> = parts.collect();
            apply(&mut draft, name, &args)?;
        }
        options
    };
    let plain = segments.get(source_at + 1..).map(|rest| rest.join("/")).unwrap_or_default();
    let (target, extension) = match segments[source_at..] {
        [] | [""] => return Err(DialectError::new(IMGPROXY, "source", "the image URL is missing").into()),
        ["plain", ..] => plain_source(&plain)?,
        ["enc", ..] => return Err(DialectError::new(IMGPROXY, "enc", "encrypted source URLs are not supported").into()),
        ref encoded => encoded_source(encoded)?,
    };
    // The URL's extension is applied after the options, as imgproxy does.
    if let Some(extension) = extension {
        draft.format = Some(format("extension", extension)?);
    }
    if let Some(fit) = draft.fit()? {
        if draft.width > 0 {
            draft.native.set("width", "width", draft.width);
        }
        if draft.height > 0 {
            draft.native.set("height", "height", draft.height);
        }
        draft.native.set("resizing_type", "fit", fit);
    }
    if let Some(format) = draft.format {
        draft.native.set("format", "format", format);
    }
    let request = ImageRequest::from_options(draft.native.finish()?, target, accept);
    let signature = DialectSignature::Imgproxy { signature: signature.to_owned(), signed_path };
    Ok(DialectRequest::plain(IMGPROXY, request, signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Route, RouteContext, parse_route_in};

    /// The canonical native spelling of an imgproxy path.
    fn canonical(path: &str) -> Result<String, String> {
        match parse_route_in(&RouteContext::all(None), path, "", None) {
            Ok(Route::Dialect(dialect)) => {
                assert_eq!(dialect.dialect, Dialect::Imgproxy);
                Ok(dialect.request.signing_message())
            }
            Ok(other) => Err(format!("not imgproxy: {other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    const CURIOSITY_B64: &str = "aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn";
    const CURIOSITY: &str = "http://example.com/images/curiosity.jpg";

    /// Paths in the forms of imgproxy's documentation ("Generating the URL", "Signing the URL") and the canonical
    /// request of each.
    #[test]
    fn documentation_examples_map_to_native_requests() {
        let table = [
            (format!("/insecure/rs:fill:300:400:0/g:sm/{CURIOSITY_B64}.png"), "imgproxy parameter \"g\": value \"sm\" is not supported: Mirage has no smart, focus-point or object crop yet".to_owned()),
            (format!("/insecure/rs:fill:300:400:0/g:no/{CURIOSITY_B64}.png"), format!("fit=crop,format=png,gravity=top,height=400,width=300/?{CURIOSITY}")),
            (format!("/insecure/rs:fill:300:400:1/plain/{CURIOSITY}@png"), format!("fit=cover,format=png,height=400,width=300/?{CURIOSITY}")),
            (format!("/insecure/rs:fit:300:300/plain/{CURIOSITY}"), format!("height=300,width=300/?{CURIOSITY}")),
            (format!("/insecure/rs:fit:300:300:1/plain/{CURIOSITY}"), format!("fit=contain,height=300,width=300/?{CURIOSITY}")),
            (format!("/insecure/resize:force:300:200/plain/{CURIOSITY}"), format!("fit=fill,height=200,width=300/?{CURIOSITY}")),
            (format!("/insecure/rt:fill-down/s:300:200/plain/{CURIOSITY}"), format!("fit=crop,height=200,width=300/?{CURIOSITY}")),
            (format!("/insecure/w:300/plain/{CURIOSITY}@webp"), format!("format=webp,width=300/?{CURIOSITY}")),
            (format!("/insecure/width:300/height:200/rt:fill/el:1/g:soea/plain/{CURIOSITY}"), format!("fit=cover,gravity=bottom-right,height=200,width=300/?{CURIOSITY}")),
            (format!("/insecure/rs:auto:300:0/plain/{CURIOSITY}"), format!("width=300/?{CURIOSITY}")),
            (format!("/insecure/rs:auto:300:200/plain/{CURIOSITY}"), "imgproxy parameter \"resizing_type\": value \"auto\" is not supported: with both sides it depends on the source's orientation; use fit or fill".to_owned()),
            (format!("/insecure/w:150/dpr:2/plain/{CURIOSITY}"), format!("width=300/?{CURIOSITY}")),
            (format!("/insecure/q:60/f:avif/plain/{CURIOSITY}"), format!("format=avif,quality=60/?{CURIOSITY}")),
            (format!("/insecure/q:0/plain/{CURIOSITY}@jpg"), format!("format=jpeg/?{CURIOSITY}")),
            (format!("/insecure/bg:255:0:0/plain/{CURIOSITY}"), format!("background=ff0000/?{CURIOSITY}")),
            (format!("/insecure/bg:00ff00/bl:5/sh:1/rot:90/plain/{CURIOSITY}"), format!("background=00ff00,blur=5,rotate=90,sharpen=1/?{CURIOSITY}")),
            (format!("/_/fill/300/400/no/0/{CURIOSITY_B64}.png"), format!("fit=crop,format=png,gravity=top,height=400,width=300/?{CURIOSITY}")),
            ("/insecure/rs:fit:300/plain/https%3A%2F%2Fh.example%2Fa.jpg%3Fv%3D1@webp".to_owned(), "format=webp,width=300/?https://h.example/a.jpg?v=1".to_owned()),
            (format!("/insecure/rs:fit:300:0:0:1/plain/{CURIOSITY}"), "imgproxy parameter \"rs\": value \"fit:300:0:0:1\" is not supported: Mirage does not extend images".to_owned()),
            (format!("/insecure/wm:0.5:ce/plain/{CURIOSITY}"), "imgproxy parameter \"wm\": not supported by Mirage (see the README, \"URL dialects\")".to_owned()),
            (format!("/insecure/q:101/plain/{CURIOSITY}"), "imgproxy parameter \"q\": value \"101\" is refused: bad value \"101\" for option \"quality\": expected 1..100".to_owned()),
            ("/insecure/rs:fit:300/enc/AAAA".to_owned(), "imgproxy parameter \"enc\": encrypted source URLs are not supported".to_owned()),
            ("/insecure/rs:fit:300/plain/local:///a.jpg".to_owned(), "imgproxy parameter \"plain\": target scheme \"local\" is not allowed: only http and https".to_owned()),
            (format!("/insecure/rs:fit:300/plain/{CURIOSITY}@tiff"), "imgproxy parameter \"extension\": value \"tiff\" is not supported: expected jpg, png, webp, avif or gif".to_owned()),
        ];
        for (path, expected) in &table {
            assert_eq!(&canonical(path).unwrap_or_else(|error| error), expected, "{path}");
        }
    }

    #[test]
    fn the_signature_and_the_path_it_covers_are_kept() {
        let path = format!("/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8/rs:fill:300:400:0/g:no/{CURIOSITY_B64}.png");
        let Ok(Route::Dialect(dialect)) = parse_route_in(&RouteContext::all(None), &path, "", None) else {
            panic!("imgproxy");
        };
        assert_eq!(
            dialect.signature,
            DialectSignature::Imgproxy {
                signature: "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8".to_owned(),
                signed_path: format!("/rs:fill:300:400:0/g:no/{CURIOSITY_B64}.png"),
            }
        );
        assert!(is_signature_segment("insecure") && is_signature_segment("_"));
        assert!(!is_signature_segment("unsafe") && !is_signature_segment("w=300") && !is_signature_segment("img"));
        // Not an imgproxy path at all: no route, as before dialects.
        assert_eq!(parse_route_in(&RouteContext::all(None), "/img/a.jpg", "", None), Ok(Route::NotFound));
    }
}
