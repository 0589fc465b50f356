//! One HTML tag pointed at Mirage: attribute values edited in place in their own quoting, new attributes added
//! after the last one in the tag's quote style.
//!
//! An `<img>` whose `src` moves and that has no `srcset` of its author's gets the responsive set: `src` at the
//! largest width, `srcset` with every width, `sizes` (kept, else `100vw`), `loading="lazy"` and
//! `decoding="async"` unless present, and `width`/`height` from the original when its size is known, so the page
//! keeps its layout while images load. Every other image URL (an author's `srcset`, lazy-loading `data-*`,
//! `<source>`, `poster`, `og:image`) becomes the mirror `{base}/?{target}`, its size left as the author chose.

use super::{Edit, Outcome, Rewriter};
use crate::request::Target;
use crate::warm::extract::{HtmlTag, HtmlValue, srcset_urls};

/// Adds to `edits` what `tag` needs, counting what was rewritten and left in `outcome`.
pub(super) fn rewrite_tag(
    rewriter: &Rewriter,
    tag: &HtmlTag,
    size_of: &dyn Fn(&Target) -> Option<(u32, u32)>,
    outcome: &mut Outcome,
    edits: &mut Vec<Edit>,
) {
    let base = &rewriter.options.base;
    let responsive = tag.name == "img" && !tag.has("srcset");
    let mut added: Vec<(&str, String)> = Vec::new();
    for value in &tag.values {
        if value.srcset {
            let mut rewritten = value.value.clone();
            // Back to front, so the offsets of the candidates not yet replaced stay right.
            for (offset, url) in srcset_urls(&value.value).into_iter().rev() {
                if let Some(target) = rewriter.judge(url, outcome) {
                    rewritten.replace_range(offset..offset + url.len(), &base.mirror(&target));
                }
            }
            if rewritten != value.value {
                edits.push(attribute_edit(value, &rewritten));
            }
            continue;
        }
        let Some(target) = rewriter.judge(&value.value, outcome) else { continue };
        if !(responsive && value.attribute == "src") {
            edits.push(attribute_edit(value, &base.mirror(&target)));
            continue;
        }
        let size = size_of(&target);
        let widths = widths_for(&rewriter.options.widths, size.map(|(width, _)| width));
        let largest = widths.last().copied().unwrap_or(1);
        edits.push(attribute_edit(value, &base.sized(&target, largest)));
        let candidates: Vec<String> =
            widths.iter().map(|width| format!("{} {width}w", base.sized(&target, *width))).collect();
        added.push(("srcset", candidates.join(", ")));
        if !tag.has("sizes") {
            added.push(("sizes", "100vw".into()));
        }
        if let Some((width, height)) = size.filter(|_| !tag.has("width") && !tag.has("height")) {
            added.extend([("width", width.to_string()), ("height", height.to_string())]);
        }
        for (name, wanted) in [("loading", "lazy"), ("decoding", "async")] {
            if !tag.has(name) {
                added.push((name, wanted.to_owned()));
            }
        }
    }
    if !added.is_empty() {
        let quote = tag.quote;
        let text: String =
            added.iter().map(|(name, value)| format!(" {name}={quote}{}{quote}", encode(value, quote))).collect();
        edits.push(Edit { range: tag.insert_at..tag.insert_at, text });
    }
}

/// The srcset widths for an original `original_width` wide (when known): Mirage never enlarges (`fit=scale-down`),
/// so widths past the original would all be the original, announced at a size it does not have; they collapse
/// into one candidate at the original's own width.
fn widths_for(widths: &[u32], original_width: Option<u32>) -> Vec<u32> {
    match original_width {
        Some(original) if widths.last().is_some_and(|largest| *largest > original) => {
            let mut smaller: Vec<u32> = widths.iter().copied().filter(|width| *width < original).collect();
            smaller.push(original);
            smaller
        }
        _ => widths.to_vec(),
    }
}

/// Replaces the value of `value` with `text`, encoded for its quoting. An unquoted value that the new text cannot
/// stay unquoted in (whitespace, quotes, `=`, `<`, `>`, `` ` ``) gets double quotes.
fn attribute_edit(value: &HtmlValue, text: &str) -> Edit {
    let needs_quotes =
        text.contains(|c: char| c.is_ascii_whitespace() || matches!(c, '"' | '\'' | '=' | '<' | '>' | '`'));
    let text = match value.quote {
        Some(quote) => encode(text, quote),
        None if needs_quotes => format!("\"{}\"", encode(text, '"')),
        None => encode(text, '"'),
    };
    Edit { range: value.range.clone(), text }
}

/// `text` as an attribute value between `quote`s: `&` and the quote as character references.
fn encode(text: &str, quote: char) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' if quote == '"' => out.push_str("&quot;"),
            '\'' if quote == '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_collapse_past_the_original() {
        assert_eq!(widths_for(&[320, 640, 1280], None), [320, 640, 1280]);
        assert_eq!(widths_for(&[320, 640, 1280], Some(500)), [320, 500]);
        assert_eq!(widths_for(&[320, 640, 1280], Some(2000)), [320, 640, 1280]);
        assert_eq!(widths_for(&[320, 640, 1280], Some(1280)), [320, 640, 1280]);
        assert_eq!(widths_for(&[320, 640], Some(100)), [100]);
    }

    #[test]
    fn values_are_encoded_for_their_quotes() {
        assert_eq!(encode("http://h/a.jpg?x=1&y='2'", '\''), "http://h/a.jpg?x=1&amp;y=&#39;2&#39;");
        assert_eq!(encode("a\"b", '"'), "a&quot;b");
        let unquoted =
            HtmlValue { attribute: "src".into(), value: String::new(), range: 0..0, quote: None, srcset: false };
        assert_eq!(
            attribute_edit(&unquoted, "https://m/?http://h/a.jpg?x=1").text,
            "\"https://m/?http://h/a.jpg?x=1\""
        );
        assert_eq!(attribute_edit(&unquoted, "https://m/a.jpg").text, "https://m/a.jpg");
    }
}
