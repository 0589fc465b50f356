//! One candidate string to one upstream image URL: trim, strip proxy prefixes, validate like the server does.
//!
//! The server's own `Target::parse` decides what a target is (absolute http(s), percent-decoded at most twice,
//! its own query kept, fragment dropped), so a URL printed here is exactly the cache key the server will use.

use crate::request::{Target, TargetError, image_service_target};

/// Proxy prefixes stripped without being asked: the CORS worker the seed blog uses.
const BUILT_IN_PREFIXES: [&str; 1] = ["https://cors.zfour.workers.dev/?"];

/// How many proxy prefixes are peeled off one candidate at most (`proxy/?proxy/?url`).
const MAX_PREFIXES: usize = 4;

/// File extensions of image paths (lowercase), for values that are only taken when they look like an image.
const IMAGE_EXTENSIONS: [&str; 14] = [
    ".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".svg", ".bmp", ".ico", ".tif", ".tiff", ".jxl", ".heic",
    ".jfif",
];

/// What one candidate turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Candidate {
    /// An upstream image URL in the server's canonical form.
    Url {
        /// `Target::canonical()`.
        url: String,
        /// Whether a proxy prefix was stripped.
        proxied: bool,
    },
    /// Not fetchable; the reason is the key of `Extraction::dropped`.
    Dropped(String),
}

/// Strips proxy prefixes and validates candidates.
#[derive(Debug, Clone)]
pub(crate) struct Normaliser {
    /// Every spelling of every prefix, longest first so the most specific one wins.
    prefixes: Vec<String>,
}

impl Normaliser {
    /// The built-in prefixes plus `extra`, each also in its `http://`, `https://` and protocol-relative forms.
    pub(crate) fn new(extra: &[String]) -> Normaliser {
        let mut prefixes = Vec::new();
        for prefix in BUILT_IN_PREFIXES.iter().copied().chain(extra.iter().map(String::as_str)) {
            let prefix = prefix.trim();
            if prefix.is_empty() {
                continue;
            }
            let rest = strip_ignore_case(prefix, "https://").or_else(|| strip_ignore_case(prefix, "http://"));
            match rest {
                Some(rest) if !rest.is_empty() => {
                    prefixes.extend([format!("https://{rest}"), format!("http://{rest}"), format!("//{rest}")]);
                }
                _ => prefixes.push(prefix.to_owned()),
            }
        }
        prefixes.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        prefixes.dedup();
        Normaliser { prefixes }
    }

    /// The text after a known proxy prefix, if `text` starts with one (compared ignoring ASCII case). A prefix
    /// `{root}/?` in Mirage's form also matches its transform form `{root}/{options}/?` (one segment of
    /// `key=value` options, as `mirage rewrite` writes `<img src>` and `srcset`), since both name one image.
    pub(super) fn strip_prefix<'t>(&self, text: &'t str) -> Option<&'t str> {
        self.prefixes.iter().find_map(|prefix| {
            strip_ignore_case(text, prefix).or_else(|| {
                let root = prefix.strip_suffix('?')?.strip_suffix('/')?;
                let (segment, rest) = strip_ignore_case(text, root)?.strip_prefix('/')?.split_once("/?")?;
                let is_options = segment.contains('=') && !segment.contains(['/', '?', '#']);
                is_options.then_some(rest)
            })
        })
    }

    /// The text after every known proxy prefix at the start of `text` (nested ones too, as [`Self::normalise`]
    /// peels them) and the first prefix as it is spelled in the text, or `None` when `text` has no prefix.
    pub(crate) fn peel<'t>(&self, text: &'t str) -> Option<(&'t str, &'t str)> {
        let text = text.trim_matches(is_html_whitespace);
        let first = self.strip_prefix(text)?;
        let prefix = &text[..text.len() - first.len()];
        let mut rest = first.trim_start_matches(is_html_whitespace);
        for _ in 1..MAX_PREFIXES {
            match self.strip_prefix(rest) {
                Some(inner) => rest = inner.trim_start_matches(is_html_whitespace),
                None => break,
            }
        }
        Some((rest, prefix))
    }

    /// Turns one raw candidate (entities already decoded) into an upstream URL or a reason to drop it.
    pub(super) fn normalise(&self, raw: &str) -> Candidate {
        let mut text = raw.trim_matches(is_html_whitespace);
        let mut proxied = false;
        for _ in 0..MAX_PREFIXES {
            match self.strip_prefix(text) {
                Some(rest) => {
                    text = rest.trim_start_matches(is_html_whitespace);
                    proxied = true;
                }
                None => break,
            }
        }
        if text.is_empty() {
            return Candidate::Dropped("empty".into());
        }
        if text.starts_with("//") {
            // A network-path reference takes the scheme of the page, which an article file does not know.
            return Candidate::Dropped("protocol-relative".into());
        }
        // Outside a proxy prefix, `http%3A%2F%2F...` is a relative path to a browser, not an encoded target:
        // only a prefixed target is percent-decoded (as the proxy would).
        if !proxied && !starts_with_scheme(text) {
            return Candidate::Dropped("relative".into());
        }
        match Target::parse(text) {
            // An absolute URL may itself be a request to an image service in a spelling Mirage reads (a weserv
            // `?url=`, a Cloudflare `/cdn-cgi/image/`, imgproxy or thumbor path, any `https://host/?{url}` proxy):
            // the image is its target, as `mirage rewrite` and the server read it.
            Ok(target) if !proxied => match image_service_target(text) {
                Some(named) => Candidate::Url { url: named.canonical().to_owned(), proxied: true },
                None => Candidate::Url { url: target.canonical().to_owned(), proxied },
            },
            Ok(target) => Candidate::Url { url: target.canonical().to_owned(), proxied },
            Err(error) => Candidate::Dropped(drop_reason(error)),
        }
    }
}

/// The `dropped` key for a target the server would refuse.
fn drop_reason(error: TargetError) -> String {
    match error {
        TargetError::Missing => "empty".into(),
        TargetError::NotAbsolute => "relative".into(),
        TargetError::NotUtf8 | TargetError::Malformed(_) | TargetError::NoHost => "malformed".into(),
        TargetError::Scheme(scheme) => format!("{}:", scheme.to_ascii_lowercase()),
    }
}

/// Whether the path of `text` (query and fragment ignored) ends in an image file extension.
pub(super) fn looks_like_image(text: &str) -> bool {
    let path = text.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    IMAGE_EXTENSIONS.iter().any(|extension| path.ends_with(extension))
}

/// ASCII whitespace as HTML defines it (what browsers trim from URL attributes).
pub(super) fn is_html_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0C')
}

/// RFC 3986: `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` followed by `:`.
pub(super) fn starts_with_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn strip_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str, proxied: bool) -> Candidate {
        Candidate::Url { url: text.into(), proxied }
    }

    fn dropped(reason: &str) -> Candidate {
        Candidate::Dropped(reason.into())
    }

    #[test]
    fn built_in_prefix_in_every_spelling() {
        let n = Normaliser::new(&[]);
        let want = url("http://h/a.jpg", true);
        assert_eq!(n.normalise("https://cors.zfour.workers.dev/?http://h/a.jpg"), want);
        assert_eq!(n.normalise("http://cors.zfour.workers.dev/?http://h/a.jpg"), want);
        assert_eq!(n.normalise("//cors.zfour.workers.dev/?http://h/a.jpg"), want);
        assert_eq!(n.normalise("  HTTPS://CORS.zfour.workers.dev/?http://h/a.jpg\n"), want);
    }

    #[test]
    fn target_query_survives_and_encoding_is_decoded() {
        let n = Normaliser::new(&[]);
        let want = url("http://h/a.jpg?x=1&y=2", true);
        assert_eq!(n.normalise("https://cors.zfour.workers.dev/?http://h/a.jpg?x=1&y=2"), want);
        assert_eq!(n.normalise("https://cors.zfour.workers.dev/?http%3A%2F%2Fh%2Fa.jpg%3Fx%3D1%26y%3D2"), want);
        assert_eq!(
            n.normalise("https://cors.zfour.workers.dev/?http%253A%252F%252Fh%252Fa.jpg%253Fx%253D1%2526y%253D2"),
            want
        );
    }

    #[test]
    fn unprefixed_encoded_text_is_relative() {
        assert_eq!(Normaliser::new(&[]).normalise("http%3A%2F%2Fh%2Fa.jpg"), dropped("relative"));
    }

    #[test]
    fn nested_and_custom_prefixes() {
        let n = Normaliser::new(&["https://img.example.org/?".into()]);
        assert_eq!(
            n.normalise("https://img.example.org/?https://cors.zfour.workers.dev/?https://h/a.png"),
            url("https://h/a.png", true)
        );
        assert_eq!(n.normalise("http://img.example.org/?https://h/a.png"), url("https://h/a.png", true));
    }

    #[test]
    fn mirage_prefix_matches_its_transform_form() {
        let n = Normaliser::new(&["https://img.example.org/?".into()]);
        let want = url("http://h/a.jpg", true);
        assert_eq!(n.normalise("https://img.example.org/width=640,format=auto/?http://h/a.jpg"), want);
        assert_eq!(n.normalise("https://img.example.org/?http://h/a.jpg"), want);
        // A path that is not one options segment is the host's own image, not a proxied one.
        assert_eq!(
            n.normalise("https://img.example.org/a/b=1/?http://h/a.jpg"),
            url("https://img.example.org/a/b=1/?http://h/a.jpg", false)
        );
    }

    #[test]
    fn refusals_by_reason() {
        let n = Normaliser::new(&[]);
        assert_eq!(n.normalise("data:image/png;base64,AAAA"), dropped("data:"));
        assert_eq!(n.normalise("javascript:alert(1)"), dropped("javascript:"));
        assert_eq!(n.normalise("FTP://h/a.jpg"), dropped("ftp:"));
        assert_eq!(n.normalise("/img/a.jpg"), dropped("relative"));
        assert_eq!(n.normalise("a.jpg"), dropped("relative"));
        assert_eq!(n.normalise("//h/a.jpg"), dropped("protocol-relative"));
        assert_eq!(n.normalise("   "), dropped("empty"));
        assert_eq!(n.normalise("https://cors.zfour.workers.dev/?"), dropped("empty"));
        assert_eq!(n.normalise("https://cors.zfour.workers.dev/?/img/a.jpg"), dropped("relative"));
        assert_eq!(n.normalise("http://"), dropped("malformed"));
    }

    #[test]
    fn non_ascii_paths_are_percent_encoded() {
        let n = Normaliser::new(&[]);
        let want = url("https://h/%E5%9B%BE%E7%89%87/a.jpg", false);
        assert_eq!(n.normalise("https://h/图片/a.jpg"), want);
        assert_eq!(n.normalise("https://h/%E5%9B%BE%E7%89%87/a.jpg"), want);
    }

    #[test]
    fn image_looking_paths() {
        assert!(looks_like_image("https://h/a.JPG?x=1"));
        assert!(looks_like_image("/img/a.webp#top"));
        assert!(!looks_like_image("https://h/post/1.html"));
        assert!(!looks_like_image("https://h/?a.jpg"));
    }
}
