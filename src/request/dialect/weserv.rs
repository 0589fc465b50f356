//! weserv (`images.weserv.nl`, `wsrv.nl`): `/?url={image}&w=300&h=300&fit=cover`, read into native options.
//!
//! Recognised by a `url` query parameter: a raw native target never starts with `url=` (it starts with a scheme,
//! or is percent-encoded, where `&` and `=` are escaped), so the two forms of `/?...` cannot be confused.
//! weserv's documentation is the reference; the mapping table is in the README ("URL dialects").

use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::{Dialect, DialectError, DialectRequest, DialectSignature, NativeOptions, source_target};
use crate::request::target::starts_with_scheme;
use crate::request::{ImageRequest, RequestError, Target};

const WESERV: Dialect = Dialect::Weserv;

/// Whether `/?{query}` is weserv's form: the query has a `url` parameter and is not a raw target.
pub fn is_weserv_query(query: &str) -> bool {
    !starts_with_scheme(query) && query.split('&').any(|pair| pair.split('=').next() == Some("url"))
}

/// weserv's `w`, `h`, `fit`, `we`: the native size and fit. weserv's default `fit=inside` may enlarge (native
/// `contain`); `we` ("without enlargement") makes it native `scale-down`, and `cover` native `crop`.
fn fit(parameters: &Parameters, options: &mut NativeOptions) -> Result<(), DialectError> {
    let (width, height) = (parameters.get("w"), parameters.get("h"));
    if let Some(w) = width {
        options.set("w", "width", w);
    }
    if let Some(h) = height {
        options.set("h", "height", h);
    }
    let without_enlargement = match parameters.get("we") {
        None => false,
        Some("" | "1" | "true") => true,
        Some(other) => return Err(DialectError::value(WESERV, "we", other, "it takes no value")),
    };
    if width.is_none() && height.is_none() {
        // Without a box there is nothing to fit: no `fit` in the options, so `?url=...&output=webp` is native
        // `format=webp`, not a second entry for the same image.
        return match parameters.get("fit") {
            None | Some("inside" | "outside" | "cover" | "fill" | "contain") => Ok(()),
            Some(other) => Err(fit_value(other)),
        };
    }
    let native = match (parameters.get("fit").unwrap_or("inside"), without_enlargement) {
        ("inside", false) => "contain",
        ("inside", true) => "scale-down",
        // With one side given, `outside` is `inside`; with both it covers the box without cropping, which no
        // native fit does.
        ("outside", we) if width.is_none() || height.is_none() => {
            if we {
                "scale-down"
            } else {
                "contain"
            }
        }
        ("outside", _) => {
            return Err(DialectError::value(
                WESERV,
                "fit",
                "outside",
                "with both w and h, Mirage cannot cover the box without cropping (use fit=cover)",
            ));
        }
        ("cover", false) => "cover",
        ("cover", true) => "crop",
        ("fill", false) => "fill",
        ("contain", false) => "pad",
        // Mirage's `fill` and `pad` always make the box's size: there is no native way to keep them from enlarging.
        (fit @ ("fill" | "contain"), true) => {
            return Err(DialectError::new(
                WESERV,
                "we",
                format!("is not supported with fit={fit}: Mirage's fill and pad always make the box's size"),
            ));
        }
        (other, _) => return Err(fit_value(other)),
    };
    options.set("fit", "fit", native);
    Ok(())
}

fn fit_value(value: &str) -> DialectError {
    DialectError::value(WESERV, "fit", value, "expected inside, outside, cover, fill or contain")
}

/// `a`: the crop alignment; the nine positions map to native gravity, smart crops have no native equivalent.
fn alignment(value: &str) -> Result<&'static str, DialectError> {
    Ok(match value {
        "center" | "centre" => "center",
        "top" | "t" => "top",
        "bottom" | "b" => "bottom",
        "left" | "l" => "left",
        "right" | "r" => "right",
        "top-left" => "top-left",
        "top-right" => "top-right",
        "bottom-left" => "bottom-left",
        "bottom-right" => "bottom-right",
        "entropy" | "attention" | "focal" => {
            return Err(DialectError::value(WESERV, "a", value, "Mirage has no smart or focal-point crop yet"));
        }
        other => return Err(DialectError::value(WESERV, "a", other, "expected one of the nine positions")),
    })
}

/// `output`: weserv's formats that Mirage encodes.
fn output(value: &str) -> Result<&'static str, DialectError> {
    Ok(match value {
        "jpg" | "jpeg" => "jpeg",
        "png" => "png",
        "gif" => "gif",
        "webp" => "webp",
        "avif" => "avif",
        other => return Err(DialectError::value(WESERV, "output", other, "expected jpg, png, gif, webp or avif")),
    })
}

/// `bg`: hex colours (`#` optional); weserv's 4-digit `rgba` form is widened to native `rrggbbaa`.
fn background(value: &str) -> Result<String, DialectError> {
    let hex = value.strip_prefix('#').unwrap_or(value);
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DialectError::value(WESERV, "bg", value, "only hexadecimal colours (rgb, rgba, rrggbb, rrggbbaa)"));
    }
    Ok(if hex.len() == 4 { hex.chars().flat_map(|c| [c, c]).collect() } else { hex.to_owned() })
}

/// `ro` (or `rot`): right angles, either way round.
fn rotation(parameter: &str, value: &str) -> Result<Option<&'static str>, DialectError> {
    let degrees: i32 =
        value.parse().map_err(|_| DialectError::value(WESERV, parameter, value, "expected a multiple of 90"))?;
    Ok(match degrees.rem_euclid(360) {
        0 if degrees % 90 == 0 => None,
        90 => Some("90"),
        180 => Some("180"),
        270 => Some("270"),
        _ => return Err(DialectError::value(WESERV, parameter, value, "Mirage rotates by multiples of 90 only")),
    })
}

/// `maxage`: weserv's `31d` spelling (`d`, `w`, `M` = 30 days, `y` = 365 days).
fn max_age(value: &str) -> Result<Duration, DialectError> {
    let refuse = || DialectError::value(WESERV, "maxage", value, "expected a number with d, w, M or y, e.g. 31d");
    let unit_at = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(refuse)?;
    let count: u64 = value[..unit_at].parse().map_err(|_| refuse())?;
    let days = match &value[unit_at..] {
        "d" => 1,
        "w" => 7,
        "M" => 30,
        "y" => 365,
        _ => return Err(refuse()),
    };
    Ok(Duration::from_secs(count.saturating_mul(days * 86_400)))
}

/// An image URL as weserv takes it: `ssl:` means https, no scheme means http, or an absolute URL.
fn image_url(parameter: &str, value: &str) -> Result<Target, DialectError> {
    match value.strip_prefix("ssl:") {
        Some(rest) => source_target(WESERV, parameter, rest, Some("https")),
        None => source_target(WESERV, parameter, value, Some("http")),
    }
}

/// The query's parameters, percent-decoded once; each key at most once.
struct Parameters(Vec<(String, String)>);

impl Parameters {
    fn parse(query: &str) -> Result<Parameters, DialectError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_decode_str(text)
                    .decode_utf8()
                    .map(std::borrow::Cow::into_owned)
                    .map_err(|_| DialectError::new(WESERV, key, "not UTF-8 after percent-decoding"))
            };
            let (key, value) = (decode(key)?, decode(value)?);
            if pairs.iter().any(|(existing, _)| *existing == key) {
                return Err(DialectError::new(WESERV, &key, "given more than once"));
            }
            pairs.push((key, value));
        }
        Ok(Parameters(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(existing, _)| existing == key).map(|(_, value)| value.as_str())
    }
}

/// Reads `/?{query}` as weserv (the caller checked [`is_weserv_query`]).
pub fn parse(query: &str, accept: Option<&str>) -> Result<DialectRequest, RequestError> {
    let parameters = Parameters::parse(query)?;
    let mut options = NativeOptions::new(WESERV);
    let mut default_image = None;
    let mut max_age_asked = None;
    let mut target = None;
    for (key, value) in &parameters.0 {
        match key.as_str() {
            "url" => target = Some(image_url("url", value)?),
            // Read together by `fit`.
            "w" | "h" | "fit" | "we" => {}
            "dpr" => options.set("dpr", "dpr", value),
            "a" => options.set("a", "gravity", alignment(value)?),
            "output" => options.set("output", "format", output(value)?),
            "q" => options.set("q", "quality", value),
            "bg" => options.set("bg", "background", background(value)?),
            "blur" => options.set("blur", "blur", value),
            "sharp" => options.set("sharp", "sharpen", value),
            "ro" | "rot" => {
                if let Some(degrees) = rotation(key, value)? {
                    options.set(key, "rotate", degrees);
                }
            }
            "default" => default_image = Some(image_url("default", value)?),
            "maxage" => max_age_asked = Some(max_age(value)?),
            other => return Err(DialectError::unsupported(WESERV, other).into()),
        }
    }
    if parameters.get("ro").is_some() && parameters.get("rot").is_some() {
        return Err(DialectError::new(WESERV, "rot", "given with ro").into());
    }
    fit(&parameters, &mut options)?;
    let target = target.ok_or_else(|| DialectError::new(WESERV, "url", "the image URL is missing"))?;
    let request = ImageRequest::from_options(options.finish()?, target, accept);
    Ok(DialectRequest {
        default_image,
        max_age: max_age_asked,
        ..DialectRequest::plain(WESERV, request, DialectSignature::None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Route, RouteContext, parse_route_in};

    /// The canonical native spelling (`{options}/?{target}`) of a weserv URL as written on a page.
    fn canonical(url: &str) -> Result<String, String> {
        let query = url.split_once("/?").map_or(url, |(_, query)| query);
        match parse_route_in(&RouteContext::all(None), "/", query, None) {
            Ok(Route::Dialect(dialect)) => {
                assert_eq!(dialect.dialect, Dialect::Weserv);
                assert_eq!(dialect.signature, DialectSignature::None);
                Ok(dialect.request.signing_message())
            }
            Ok(other) => Err(format!("not weserv: {other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// URLs from weserv's documentation (wsrv.nl/docs) and the canonical request each is.
    #[test]
    fn documentation_examples_map_to_native_requests() {
        let table = [
            ("https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg", "/?http://wsrv.nl/lichtenstein.jpg"),
            ("https://wsrv.nl/?url=ssl:wsrv.nl/lichtenstein.jpg", "/?https://wsrv.nl/lichtenstein.jpg"),
            (
                "https://images.weserv.nl/?url=example.com/a.jpg&w=300",
                "fit=contain,width=300/?http://example.com/a.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&h=300",
                "fit=contain,height=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=inside",
                "fit=contain,height=300,width=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=cover",
                "fit=cover,height=300,width=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=contain&bg=black",
                "weserv parameter \"bg\": value \"black\" is not supported: only hexadecimal colours (rgb, rgba, rrggbb, rrggbbaa)",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=contain&bg=000",
                "background=000000,fit=pad,height=300,width=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=fill",
                "fit=fill,height=300,width=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=cover&we",
                "fit=crop,height=300,width=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            ("https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&we", "width=300/?http://wsrv.nl/lichtenstein.jpg"),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=cover&a=top",
                "fit=cover,gravity=top,height=300,width=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=cover&a=attention",
                "weserv parameter \"a\": value \"attention\" is not supported: Mirage has no smart or focal-point crop yet",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=100&dpr=2",
                "fit=contain,width=200/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&output=webp",
                "format=webp/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&output=jpg&q=20",
                "fit=contain,format=jpeg,quality=20,width=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            ("https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&blur=5", "blur=5/?http://wsrv.nl/lichtenstein.jpg"),
            ("https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&sharp=5", "sharpen=5/?http://wsrv.nl/lichtenstein.jpg"),
            ("https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&ro=90", "rotate=90/?http://wsrv.nl/lichtenstein.jpg"),
            ("https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&rot=-90", "rotate=270/?http://wsrv.nl/lichtenstein.jpg"),
            ("https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&ro=360", "/?http://wsrv.nl/lichtenstein.jpg"),
            (
                "https://wsrv.nl/?url=https%3A%2F%2Fwsrv.nl%2Flichtenstein.jpg%3Fv%3D2&w=300",
                "fit=contain,width=300/?https://wsrv.nl/lichtenstein.jpg?v=2",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&filt=greyscale",
                "weserv parameter \"filt\": not supported by Mirage (see the README, \"URL dialects\")",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&h=300&fit=outside",
                "weserv parameter \"fit\": value \"outside\" is not supported: with both w and h, Mirage cannot cover the box without cropping (use fit=cover)",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&w=300&fit=outside",
                "fit=contain,width=300/?http://wsrv.nl/lichtenstein.jpg",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&output=tiff",
                "weserv parameter \"output\": value \"tiff\" is not supported: expected jpg, png, gif, webp or avif",
            ),
            (
                "https://wsrv.nl/?url=wsrv.nl/lichtenstein.jpg&q=0",
                "weserv parameter \"q\": value \"0\" is refused: bad value \"0\" for option \"quality\": expected 1..100",
            ),
            ("https://wsrv.nl/?w=300&url=", "weserv parameter \"url\": the image URL is missing"),
        ];
        assert!(table.len() >= 15);
        for (url, expected) in table {
            let got = canonical(url).unwrap_or_else(|error| error);
            assert_eq!(got, expected, "{url}");
        }
    }

    #[test]
    fn default_and_maxage_are_not_part_of_the_request() {
        let query = "url=example.com/missing.jpg&w=300&default=ssl:wsrv.nl/lichtenstein.jpg&maxage=7d";
        let Ok(Route::Dialect(dialect)) = parse_route_in(&RouteContext::all(None), "/", query, None) else {
            panic!("weserv");
        };
        assert_eq!(dialect.default_image.map(|t| t.to_string()).as_deref(), Some("https://wsrv.nl/lichtenstein.jpg"));
        assert_eq!(dialect.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(dialect.request.signing_message(), "fit=contain,width=300/?http://example.com/missing.jpg");
        assert_eq!(max_age("1y"), Ok(Duration::from_secs(365 * 86_400)));
        assert_eq!(max_age("2M"), Ok(Duration::from_secs(60 * 86_400)));
        assert!(max_age("31").is_err() && max_age("d").is_err() && max_age("5h").is_err());
    }

    #[test]
    fn raw_targets_are_never_weserv() {
        assert!(is_weserv_query("url=example.com/a.jpg"));
        assert!(is_weserv_query("w=300&url=example.com/a.jpg"));
        assert!(!is_weserv_query("http://h/a.jpg?x=1&url=2"));
        assert!(!is_weserv_query("http%3A%2F%2Fh%2Fa.jpg%3Furl%3D2"));
        assert!(!is_weserv_query("urls=1"));
        // With weserv turned off, `/?url=...` is a native target, which is not absolute: 400 as before.
        let native = parse_route_in(&RouteContext::NATIVE, "/", "url=example.com/a.jpg", None);
        assert!(matches!(native, Err(RequestError::Target(_))), "{native:?}");
        assert!(Parameters::parse("url=a&url=b").is_err());
    }
}
