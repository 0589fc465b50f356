//! Image URLs in YAML front matter (`---` ... `---` at the top of a Hexo/Jekyll/Hugo post).
//!
//! Every string value is walked, at any depth, and taken when it is an image by position or by look:
//! - under a key known to hold images (`headimg`, `thumbnail`, `cover`, `photos`, ... at any level above it),
//!   any URL-like string (no whitespace, contains `/`, `.` or `:`) is a candidate, so a relative `cover:
//!   /img/a.jpg` is counted as dropped rather than silently ignored;
//! - under any other key (`link`, `source`, `permalink`, ...), a value is a candidate only if it is behind a
//!   proxy prefix or its path ends in an image extension; other URLs (a `link:` to a web page) are not images
//!   and are ignored without being counted.
//!
//! Front matter that is not valid YAML is read line by line instead (`key: value`), with the same rules, so
//! one badly quoted title does not hide the post's cover image.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::Sink;
use super::candidate::{Normaliser, looks_like_image};
use super::spot::Spot;

/// Keys whose values are images (compared lowercase, with `-` read as `_`).
const IMAGE_KEYS: [&str; 32] = [
    "headimg",
    "head_img",
    "header_img",
    "thumbnail",
    "thumb",
    "cover",
    "cover_image",
    "cover_img",
    "coverimg",
    "image",
    "images",
    "img",
    "banner",
    "banner_img",
    "index_img",
    "photo",
    "photos",
    "gallery",
    "top_img",
    "og_image",
    "featured_image",
    "feature_image",
    "featureimage",
    "hero",
    "hero_image",
    "poster",
    "background",
    "bg_img",
    "avatar",
    "logo",
    "icon",
    "screenshot",
];

/// Plain YAML scalars that are booleans or null (`cover: false`), never paths.
const NOT_STRINGS: [&str; 9] = ["true", "false", "yes", "no", "on", "off", "null", "~", "none"];

/// The front matter of `text`: leading blank lines, a `---` line, YAML, then a `---` (or `...`) line. Returns
/// the YAML's byte range and where the body starts.
pub(super) fn split(text: &str) -> Option<(std::ops::Range<usize>, usize)> {
    let mut lines = line_spans(text);
    let opening = lines.find(|(start, end)| !text[*start..*end].trim().is_empty())?;
    if text[opening.0..opening.1].trim_end() != "---" {
        return None;
    }
    let yaml_start = next_line_start(text, opening.1);
    for (start, end) in lines {
        if matches!(text[start..end].trim_end(), "---" | "...") {
            return Some((yaml_start..start, next_line_start(text, end)));
        }
    }
    None
}

/// Offers the image values of the front matter `yaml`, which starts at byte `base` of the file.
pub(super) fn scan(yaml: &str, base: usize, sink: &mut Sink<'_>) {
    let first_line = sink.line_at(base);
    let mut walker = Walker::default();
    let values = match Parser::new_from_str(yaml).load(&mut walker, false) {
        Ok(()) => walker.values,
        Err(_) => by_lines(yaml),
    };
    for value in values {
        if wanted(&value, sink.normaliser()) {
            sink.offer(&value.text, first_line + value.line - 1);
            if sink.wants_spots()
                && let Some(spot) = spot_of(yaml, base, &value)
            {
                sink.spot(spot);
            }
        }
    }
}

/// Where `value` is written: at its scalar's start (the parser's mark, at the opening quote if any) or, for the
/// line-by-line fallback, after the key on its line. `None` when the text there is not the value itself (escapes
/// in a quoted scalar, a value folded over lines), which an editor must then leave alone.
fn spot_of(yaml: &str, base: usize, value: &Value) -> Option<Spot> {
    let start = match value.index {
        // yaml-rust2 counts its marks in characters (its documentation says bytes).
        Some(index) => yaml.char_indices().nth(index).map_or(yaml.len(), |(at, _)| at),
        None => {
            let line_start = yaml.split_inclusive('\n').take(value.line - 1).map(str::len).sum::<usize>();
            let line = yaml[line_start..].split('\n').next().unwrap_or_default();
            let after_key = line.find(": ").map_or(0, |colon| colon + 1);
            let item = line.trim_start().strip_prefix("- ").map(|_| line.len() - line.trim_start().len() + 1);
            let from = line_start + item.unwrap_or(after_key);
            from + yaml[from..].len() - yaml[from..].trim_start_matches([' ', '\t']).len()
        }
    };
    let quote = yaml[start..].chars().next().filter(|c| matches!(c, '\'' | '"'));
    let text_start = start + quote.map_or(0, char::len_utf8);
    let written = yaml.get(text_start..text_start + value.text.len())?;
    let closed = quote.is_none_or(|quote| yaml[text_start + value.text.len()..].starts_with(quote));
    (written == value.text && closed).then(|| Spot::FrontMatter {
        range: base + text_start..base + text_start + value.text.len(),
        value: value.text.clone(),
        quote,
    })
}

/// A string value of the front matter.
#[derive(Debug)]
struct Value {
    text: String,
    /// 1-based line within the YAML.
    line: usize,
    /// Character offset of the scalar (its opening quote, if quoted) within the YAML, when the parser gave it.
    index: Option<usize>,
    /// Under a key known to hold images.
    image_key: bool,
    /// Written without quotes (so `false` is a boolean, not a path).
    plain: bool,
}

/// Whether a front-matter value is an image candidate (the rules of the module documentation).
fn wanted(value: &Value, normaliser: &Normaliser) -> bool {
    let text = value.text.trim();
    if text.is_empty() || text.contains(char::is_whitespace) {
        return false;
    }
    if value.plain && NOT_STRINGS.iter().any(|word| word.eq_ignore_ascii_case(text)) {
        return false;
    }
    if value.image_key {
        return text.contains(['/', '.', ':']);
    }
    normaliser.strip_prefix(text).is_some() || looks_like_image(text)
}

fn is_image_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase().replace('-', "_");
    IMAGE_KEYS.contains(&key.as_str())
}

/// Where a YAML container is in its walk.
#[derive(Debug)]
enum Frame {
    /// A mapping: whether it is under an image key, whether a key comes next, whether the current key is one.
    Mapping { image: bool, expect_key: bool, key_image: bool },
    /// A sequence under an image key or not.
    Sequence { image: bool },
}

/// Collects string values with their line and whether an image key is above them.
#[derive(Debug, Default)]
struct Walker {
    stack: Vec<Frame>,
    values: Vec<Value>,
}

impl Walker {
    /// Whether the next value is under an image key.
    fn image_context(&self) -> bool {
        match self.stack.last() {
            Some(Frame::Mapping { image, key_image, .. }) => *image || *key_image,
            Some(Frame::Sequence { image }) => *image,
            None => false,
        }
    }

    /// A value (scalar, alias or container) has been read: its mapping expects a key again.
    fn value_done(&mut self) {
        if let Some(Frame::Mapping { expect_key, .. }) = self.stack.last_mut() {
            *expect_key = true;
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::MappingStart(..) => {
                let image = self.image_context();
                self.stack.push(Frame::Mapping { image, expect_key: true, key_image: false });
            }
            Event::SequenceStart(..) => {
                let image = self.image_context();
                self.stack.push(Frame::Sequence { image });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            Event::Scalar(text, style, ..) => {
                if let Some(Frame::Mapping { expect_key: expect_key @ true, key_image, .. }) = self.stack.last_mut() {
                    *key_image = is_image_key(&text);
                    *expect_key = false;
                    return;
                }
                let image_key = self.image_context();
                self.values.push(Value {
                    text,
                    line: mark.line(),
                    index: Some(mark.index()),
                    image_key,
                    plain: style == TScalarStyle::Plain,
                });
                self.value_done();
            }
            Event::Alias(_) => self.value_done(),
            _ => {}
        }
    }
}

/// The fallback for front matter that is not YAML: `key: value` and `- value` lines, quotes removed. A list
/// item counts as under an image key when the last key line above it with no value was one.
fn by_lines(yaml: &str) -> Vec<Value> {
    let mut values = Vec::new();
    let mut list_key_image = false;
    for (index, line) in yaml.lines().enumerate() {
        let line_text = line.trim();
        let (image_key, value) = if let Some(item) = line_text.strip_prefix("- ") {
            (list_key_image, item)
        } else if let Some((key, value)) = line_text.split_once(':').filter(|(key, _)| !key.contains("//")) {
            let image_key = is_image_key(key);
            if value.trim().is_empty() {
                list_key_image = image_key;
            }
            (image_key, value)
        } else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|quote| value.strip_prefix(*quote).and_then(|inner| inner.strip_suffix(*quote)));
        values.push(Value {
            text: unquoted.unwrap_or(value).to_owned(),
            line: index + 1,
            index: None,
            image_key,
            plain: unquoted.is_none(),
        });
    }
    values
}

/// The `(start, end)` byte ranges of the lines of `text`, without their line breaks.
fn line_spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let end = text[start..].find('\n').map_or(text.len(), |at| start + at);
        let span = (start, end);
        start = end + 1;
        Some(span)
    })
}

fn next_line_start(text: &str, line_end: usize) -> usize {
    (line_end + 1).min(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_allows_leading_blank_lines_and_crlf() {
        let text = "\n---\r\ntitle: a\r\n---\r\nbody";
        let (yaml, body) = split(text).expect("front matter");
        assert_eq!(&text[yaml], "title: a\r\n");
        assert_eq!(&text[body..], "body");
        assert!(split("title: a\n---\nbody").is_none());
        assert!(split("---\ntitle: a\n").is_none());
    }

    #[test]
    fn walker_tracks_image_keys_through_nesting() {
        let yaml = "title: x\ncover:\n  src: a.jpg\n  alt: a cat\nphotos:\n  - https://h/1.png\nlink: https://h/page\n";
        let mut walker = Walker::default();
        Parser::new_from_str(yaml).load(&mut walker, false).expect("yaml");
        let found: Vec<(&str, usize, bool)> =
            walker.values.iter().map(|value| (value.text.as_str(), value.line, value.image_key)).collect();
        assert_eq!(
            found,
            [
                ("x", 1, false),
                ("a.jpg", 3, true),
                ("a cat", 4, true),
                ("https://h/1.png", 6, true),
                ("https://h/page", 7, false)
            ]
        );
    }

    #[test]
    fn fallback_reads_key_value_lines() {
        let values = by_lines("title: 'it's broken'\nphotos:\n  - https://h/1.png\nlink: https://h/page");
        let found: Vec<(&str, usize, bool)> =
            values.iter().map(|value| (value.text.as_str(), value.line, value.image_key)).collect();
        assert_eq!(found, [("it's broken", 1, false), ("https://h/1.png", 3, true), ("https://h/page", 4, false)]);
    }
}
