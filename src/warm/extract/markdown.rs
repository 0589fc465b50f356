//! Image URLs in a markdown body: inline `![alt](url "title")` and reference-style `![alt][ref]` images, and
//! whatever the HTML blocks and inline HTML hold (handed to the HTML scanner at their place in the file).
//! Code blocks and code spans are text, not images, and are skipped by the parser itself.

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag};

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
                let offset = match link_type {
                    LinkType::Reference | LinkType::Collapsed | LinkType::Shortcut => {
                        // The URL is written in the definition `[ref]: url`, so that is its line.
                        events.reference_definitions().get(&id).map(|definition| definition.span.start)
                    }
                    _ => body
                        .get(range.clone())
                        .and_then(|source| destination_offset(source, &dest_url))
                        .map(|at| range.start + at),
                };
                let line = sink.line_at(base + offset.unwrap_or(range.start));
                sink.offer(&dest_url, line);
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
