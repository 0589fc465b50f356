//! Image URLs in HTML: `<img>` (`src`, lazy-loading `data-*`, `srcset`), `<picture><source srcset>`,
//! `<video poster>` and `og:image`/`twitter:image` meta tags, found with a WHATWG tokenizer (which also decodes
//! character references such as `&amp;` in attribute values).

use html5gum::{DefaultEmitter, Span, Token, Tokenizer};

use super::Sink;
use super::candidate::is_html_whitespace;
use super::spot::{HtmlTag, HtmlValue, Spot};

/// `<img>` attributes holding one URL (lazy-loading plugins keep the real one in `data-*`).
const IMG_SINGLE: [&str; 4] = ["src", "data-src", "data-original", "data-lazy-src"];
/// Attributes holding a srcset (a list of candidates with descriptors).
const SRCSET: [&str; 2] = ["srcset", "data-srcset"];
/// `<meta property|name=... content=URL>` names whose content is an image.
const META_IMAGE: [&str; 5] = ["og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src"];

/// How an attribute's value is read.
#[derive(Clone, Copy)]
enum Shape {
    Single,
    Srcset,
}

/// Offers every image URL in `fragment`, which starts at byte `base` of the file.
pub(super) fn scan(fragment: &str, base: usize, sink: &mut Sink<'_>) {
    let mut emitter = DefaultEmitter::<usize>::new_with_span();
    // Text of <script>, <style>, <textarea>... is not markup: switch states the way a browser would.
    emitter.naively_switch_states(true);
    for token in Tokenizer::new_with_emitter(fragment, emitter) {
        let Ok(Token::StartTag(tag)) = token else { continue };
        let tag_name = String::from_utf8_lossy(&tag.name);
        let mut attributes: Vec<(String, String, Span<usize>)> = tag
            .attributes
            .iter()
            .map(|(name, value)| {
                (String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned(), value.span)
            })
            .collect();
        // Document order, so the first candidate seen is the first written.
        attributes.sort_by_key(|(_, _, span)| span.start);
        let attribute = |wanted: &str| attributes.iter().find(|(name, _, _)| name == wanted);
        let mut spot_values = Vec::new();
        for (name, value, span) in &attributes {
            let shape = match (tag_name.as_ref(), name.as_str()) {
                ("img", name) if IMG_SINGLE.contains(&name) => Shape::Single,
                ("img" | "source", name) if SRCSET.contains(&name) => Shape::Srcset,
                ("video", "poster") => Shape::Single,
                ("meta", "content") => {
                    let is_image = ["property", "name"]
                        .iter()
                        .filter_map(|key| attribute(key))
                        .any(|(_, kind, _)| META_IMAGE.iter().any(|image| image.eq_ignore_ascii_case(kind.trim())));
                    if !is_image {
                        continue;
                    }
                    Shape::Single
                }
                _ => continue,
            };
            let value_line = sink.line_at(base + value_start(fragment, *span, name.len()));
            if sink.wants_spots()
                && let Some((range, quote)) = written_value(fragment, *span, name.len())
            {
                let srcset = matches!(shape, Shape::Srcset);
                let range = base + range.start..base + range.end;
                spot_values.push(HtmlValue { attribute: name.clone(), value: value.clone(), range, quote, srcset });
            }
            match shape {
                Shape::Single => sink.offer(value, value_line),
                Shape::Srcset => {
                    for (offset, url) in srcset_urls(value) {
                        let line = value_line + value[..offset].matches('\n').count();
                        sink.offer(url, line);
                    }
                }
            }
        }
        if !spot_values.is_empty() {
            let written: Vec<_> = attributes
                .iter()
                .map(|(name, _, span)| (written_value(fragment, *span, name.len()), span, name))
                .collect();
            let insert_at = written
                .iter()
                .map(|(value, span, name)| match value {
                    Some((range, quote)) => range.end + quote.map_or(0, char::len_utf8),
                    None => span.start + name.len(),
                })
                .max()
                .unwrap_or(tag.span.start + 1 + tag.name.len());
            let quote = written.iter().find_map(|(value, _, _)| value.as_ref().and_then(|(_, quote)| *quote));
            sink.spot(Spot::Tag(HtmlTag {
                name: tag_name.into_owned(),
                attribute_names: attributes.iter().map(|(name, _, _)| name.clone()).collect(),
                values: spot_values,
                insert_at: base + insert_at,
                quote: quote.unwrap_or('"'),
            }));
        }
    }
}

/// The value of the attribute spanning `span` as written (inside its quotes) and its quote, or `None` when the
/// attribute has no value (`<img ismap>`).
fn written_value(fragment: &str, span: Span<usize>, name_len: usize) -> Option<(std::ops::Range<usize>, Option<char>)> {
    let bytes = fragment.as_bytes();
    let skip_space = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let at = skip_space(span.start + name_len);
    if bytes.get(at) != Some(&b'=') {
        return None;
    }
    let at = skip_space(at + 1);
    match bytes.get(at) {
        Some(&quote @ (b'"' | b'\'')) => {
            let start = at + 1;
            let end = fragment[start..].find(char::from(quote)).map_or(fragment.len(), |close| start + close);
            Some((start..end, Some(char::from(quote))))
        }
        Some(_) => {
            let end = fragment[at..]
                .find(|c: char| c == '>' || c.is_ascii_whitespace())
                .map_or(fragment.len(), |stop| at + stop);
            Some((at..end, None))
        }
        None => None,
    }
}

/// Where the value of the attribute spanning `span` (from its name to its value's end) starts: past the name,
/// `=` and an opening quote.
fn value_start(fragment: &str, span: Span<usize>, name_len: usize) -> usize {
    let bytes = fragment.as_bytes();
    let skip_space = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let mut at = skip_space(span.start + name_len);
    if bytes.get(at) == Some(&b'=') {
        at = skip_space(at + 1);
        if matches!(bytes.get(at), Some(b'"' | b'\'')) {
            at += 1;
        }
    }
    at.min(span.end.max(span.start))
}

/// The URLs of a srcset, with their byte offsets in it, following the HTML standard's "parse a srcset attribute":
/// a URL is a run of non-whitespace (so it may contain commas), trailing commas end a candidate, and descriptors
/// (`2x`, `300w`, even `(...)` with commas inside) run up to the next comma outside parentheses.
pub(crate) fn srcset_urls(srcset: &str) -> Vec<(usize, &str)> {
    let bytes = srcset.as_bytes();
    let is_space = |b: u8| is_html_whitespace(char::from(b));
    let mut urls = Vec::new();
    let mut at = 0;
    loop {
        while at < bytes.len() && (is_space(bytes[at]) || bytes[at] == b',') {
            at += 1;
        }
        if at >= bytes.len() {
            return urls;
        }
        let start = at;
        while at < bytes.len() && !is_space(bytes[at]) {
            at += 1;
        }
        let token = &srcset[start..at];
        let url = token.trim_end_matches(',');
        if url.len() == token.len() {
            // Descriptors follow: skip them up to a comma that is not inside parentheses.
            let mut in_parens = false;
            while at < bytes.len() {
                match bytes[at] {
                    b'(' => in_parens = true,
                    b')' => in_parens = false,
                    b',' if !in_parens => break,
                    _ => {}
                }
                at += 1;
            }
        }
        if !url.is_empty() {
            urls.push((start, url));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::srcset_urls;

    fn urls(srcset: &str) -> Vec<&str> {
        srcset_urls(srcset).into_iter().map(|(_, url)| url).collect()
    }

    #[test]
    fn candidates_and_descriptors() {
        assert_eq!(urls("a.jpg 1x, b.jpg 2x"), ["a.jpg", "b.jpg"]);
        assert_eq!(urls("a.jpg 300w,b.jpg 600w , c.jpg"), ["a.jpg", "b.jpg", "c.jpg"]);
        assert_eq!(urls("  a.jpg, b.jpg,  "), ["a.jpg", "b.jpg"]);
        // As in browsers: a comma with no whitespace after it is part of the URL unless it ends it.
        assert_eq!(urls("a.jpg,b.jpg 2x"), ["a.jpg,b.jpg"]);
        assert_eq!(urls("a.jpg,, b.jpg"), ["a.jpg", "b.jpg"]);
        assert_eq!(urls("a.jpg"), ["a.jpg"]);
        assert_eq!(urls(""), Vec::<&str>::new());
    }

    #[test]
    fn commas_inside_urls_and_parentheses() {
        assert_eq!(urls("http://h/a.jpg?s=1,2 1x, http://h/b.jpg 2x"), ["http://h/a.jpg?s=1,2", "http://h/b.jpg"]);
        assert_eq!(urls("a.jpg (min-width: 1px, foo) 1x, b.jpg"), ["a.jpg", "b.jpg"]);
        assert_eq!(urls("http://h/c_1,w_2/a.jpg 2x"), ["http://h/c_1,w_2/a.jpg"]);
    }

    #[test]
    fn offsets_point_at_urls() {
        let srcset = "a.jpg 1x,\n  b.jpg 2x";
        assert_eq!(srcset_urls(srcset), [(0, "a.jpg"), (12, "b.jpg")]);
    }
}
