//! Image URLs in a markdown body: inline `![alt](url "title")` and reference-style `![alt][ref]` images, and
//! whatever the HTML blocks and inline HTML hold (handed to the HTML scanner at their place in the file).
//! Code blocks and code spans are text, not images, and are skipped by the parser itself.

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag};

use super::spot::Spot;
use super::{Sink, html};

/// Offers every image URL in `body`, which starts at byte `base` of the file.
pub(super) fn scan(body: &str, base: usize, sink: &mut Sink<'_>) {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_DEFINITION_LIST;
    let mut events = Parser::new_ext(body, options).into_offset_iter();
    while let Some((event, range)) = events.next() {
        match event {
            // The destination is already unescaped: backslash escapes and entities (`&amp;`) are decoded.
            Event::Start(Tag::Image { link_type, dest_url, id, .. }) => {
                let (offset, written) = match link_type {
                    LinkType::Reference | LinkType::Collapsed | LinkType::Shortcut => {
                        // The URL is written in the definition `[ref]: url`, so that is its line.
                        let span = events.reference_definitions().get(&id).map(|definition| definition.span.clone());
                        let written = span.as_ref().and_then(|span| {
                            let source = body.get(span.clone())?;
                            let at = definition_destination(source)?;
                            Some(span.start + at)
                        });
                        (span.map(|span| span.start), written)
                    }
                    _ => {
                        let at = body
                            .get(range.clone())
                            .and_then(|source| destination_offset(source, &dest_url))
                            .map(|at| range.start + at);
                        (at, at)
                    }
                };
                let line = sink.line_at(base + offset.unwrap_or(range.start));
                sink.offer(&dest_url, line);
                if sink.wants_spots()
                    && let Some(start) = written
                {
                    let pointy = start > 0 && body.as_bytes()[start - 1] == b'<';
                    let end = start + destination_len(&body[start..], pointy);
                    sink.spot(Spot::Markdown { range: base + start..base + end, value: dest_url.to_string(), pointy });
                }
            }
            // The whole block at once, from the file itself, so the tokenizer sees tags split over lines and its
            // offsets are offsets in the file.
            Event::Start(Tag::HtmlBlock) | Event::InlineHtml(_) => {
                if let Some(fragment) = body.get(range.clone()) {
                    html::scan(fragment, base + range.start, sink);
                }
            }
            _ => {}
        }
    }
}

/// Where the destination of an inline image starts in its source `![alt](url)`: after the `](` that precedes
/// it (the alt text may itself contain brackets, so the last `](` before the destination is taken).
fn destination_offset(source: &str, destination: &str) -> Option<usize> {
    let open = source.rfind("](").map(|at| at + 2)?;
    let rest = &source[open..];
    let skipped = rest.len() - rest.trim_start().len();
    let start = open + skipped;
    let written = source[start..].strip_prefix('<').map_or(start, |_| start + 1);
    // Only trust the position if the text there is the destination (it may be written escaped).
    source[written..].starts_with(destination.get(..1).unwrap_or_default()).then_some(written)
}

/// Where the destination of a link reference definition `[label]: url "title"` starts in its source (past `<`
/// when written `<url>`): after the label's closing `]:` and the whitespace (a line break included) after it.
fn definition_destination(source: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut at = 1;
    while at < bytes.len() && bytes[at] != b']' {
        at += if bytes[at] == b'\\' { 2 } else { 1 };
    }
    if bytes.get(at + 1) != Some(&b':') {
        return None;
    }
    at += 2;
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    if bytes.get(at) == Some(&b'<') {
        at += 1;
    }
    (at < bytes.len()).then_some(at)
}

/// The length of a destination as written from its start: up to `>` when it is written `<url>`; otherwise up to
/// whitespace, a control character or the `)` that closes it (parentheses inside must balance, as CommonMark
/// reads them), skipping backslash escapes.
fn destination_len(rest: &str, pointy: bool) -> usize {
    let bytes = rest.as_bytes();
    let mut depth = 0usize;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => {
                at += 2;
                continue;
            }
            b'>' | b'\n' | b'\r' if pointy => break,
            b'(' if !pointy => depth += 1,
            b')' if !pointy => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            byte if !pointy && (byte.is_ascii_whitespace() || byte.is_ascii_control()) => break,
            _ => {}
        }
        at += 1;
    }
    at.min(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_as_written() {
        assert_eq!(destination_len("http://h/a_(1).jpg \"t\")", false), "http://h/a_(1).jpg".len());
        assert_eq!(destination_len("http://h/a\\).jpg)", false), "http://h/a\\).jpg".len());
        assert_eq!(destination_len("http://h/a b.jpg> \"t\")", true), "http://h/a b.jpg".len());
        assert_eq!(definition_destination("[a]: http://h/a.jpg"), Some(5));
        assert_eq!(definition_destination("[a\\]b]:\n  <http://h/a.jpg>"), Some(11));
    }
}
