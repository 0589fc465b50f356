//! What a client's `Accept` header allows, reduced to the few classes that key `format=auto` variants.

/// Whether this build encodes AVIF (rav1e, through ravif; see the README's dependency note for its build cost).
/// Negotiation depends on it (a client is only put in the AVIF class when AVIF can be served), and so does
/// `transform::OutputFormat::supported`, which reads it from here so that the two cannot disagree.
pub const AVIF_ENCODER: bool = true;

/// What the client's `Accept` header allows beyond the formats every client takes (JPEG, PNG, GIF).
/// This is what goes into the cache key for `format=auto`, so it has as few values as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcceptClass {
    /// AVIF and WebP accepted (and this build encodes AVIF). WebP too, because an AVIF output over
    /// `--max-avif-pixels` falls back to WebP, which must be a format the client takes; every browser that sends
    /// `image/avif` also sends `image/webp`, and a client that names AVIF alone gets JPEG or PNG.
    Avif,
    /// WebP accepted.
    Webp,
    /// Neither: JPEG or PNG.
    Basic,
}

impl AcceptClass {
    /// Classifies an `Accept` header. Only an explicit `image/webp` or `image/avif` with a non-zero q counts:
    /// wildcards (`*/*`, `image/*`) are sent by clients that cannot decode either.
    pub fn from_accept(header: Option<&str>) -> AcceptClass {
        let Some(header) = header else {
            return AcceptClass::Basic;
        };
        let mut avif = false;
        let mut webp = false;
        for range in header.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let mut quality = 1.0f32;
            for parameter in parts {
                if let Some((key, value)) = parameter.split_once('=')
                    && key.trim().eq_ignore_ascii_case("q")
                {
                    // An unreadable q is taken as "no": better a JPEG than a format the client cannot show.
                    quality = value.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0);
                }
            }
            if quality <= 0.0 {
                continue;
            }
            if media.eq_ignore_ascii_case("image/avif") {
                avif = true;
            } else if media.eq_ignore_ascii_case("image/webp") {
                webp = true;
            }
        }
        if avif && webp && AVIF_ENCODER {
            AcceptClass::Avif
        } else if webp {
            AcceptClass::Webp
        } else {
            AcceptClass::Basic
        }
    }

    /// Every class a client can fall into in this build, best first: `format=auto` has one cache entry each.
    pub fn negotiable() -> &'static [AcceptClass] {
        if AVIF_ENCODER {
            &[AcceptClass::Avif, AcceptClass::Webp, AcceptClass::Basic]
        } else {
            &[AcceptClass::Webp, AcceptClass::Basic]
        }
    }

    /// The class's name in cache keys.
    pub fn name(self) -> &'static str {
        match self {
            AcceptClass::Avif => "avif",
            AcceptClass::Webp => "webp",
            AcceptClass::Basic => "basic",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_classes() {
        let cases = [
            (None, AcceptClass::Basic),
            (Some(""), AcceptClass::Basic),
            (Some("*/*"), AcceptClass::Basic),
            (Some("image/*,*/*;q=0.8"), AcceptClass::Basic),
            (Some("image/webp,*/*"), AcceptClass::Webp),
            (Some("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"), AcceptClass::Avif),
            (Some("image/avif,image/webp,*/*"), AcceptClass::Avif),
            (Some("image/webp, IMAGE/AVIF;q=0.9"), AcceptClass::Avif),
            (Some("image/avif;q=0,image/webp,*/*"), AcceptClass::Webp),
            (Some("image/avif,image/webp;q=0,*/*"), AcceptClass::Basic),
            (Some("image/webp;q=0"), AcceptClass::Basic),
            (Some("image/webp;q=0.0, image/png"), AcceptClass::Basic),
            (Some("IMAGE/WEBP ; Q=0.5"), AcceptClass::Webp),
            (Some("image/webp;q=abc"), AcceptClass::Basic),
            (Some("image/webp;q=2"), AcceptClass::Basic),
            // AVIF alone: its fallback over --max-avif-pixels (WebP) would not be accepted, so JPEG/PNG.
            (Some("image/avif"), AcceptClass::Basic),
            (Some("image/webpx"), AcceptClass::Basic),
        ];
        for (header, expected) in cases {
            assert_eq!(AcceptClass::from_accept(header), expected, "{header:?}");
        }
    }

    #[test]
    fn every_header_falls_into_a_negotiable_class() {
        for header in [None, Some("image/avif"), Some("image/webp"), Some("image/avif,image/webp"), Some("*/*")] {
            assert!(AcceptClass::negotiable().contains(&AcceptClass::from_accept(header)), "{header:?}");
        }
    }
}
