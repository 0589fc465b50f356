//! Where each image URL is written in a file, byte for byte, for tools that edit articles in place (`mirage
//! rewrite`): the same scanners that find URLs for `urls` and `warm` report the byte range of each one, so the
//! editor never has its own idea of what an image is.

use std::ops::Range;

/// One place in a file that holds an image URL (or, for HTML, one tag that holds some).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spot {
    /// A front-matter string value (the rules of `front_matter`: an image key, a proxy prefix or an image path).
    FrontMatter {
        /// The value as written, inside its quotes if it has them.
        range: Range<usize>,
        /// The value (equal to the text at `range`: values written with escapes are not reported).
        value: String,
        /// `'` or `"` when the value is quoted, `None` for a plain scalar.
        quote: Option<char>,
    },
    /// A markdown image destination, inline `![alt](url)` or in the definition `[ref]: url` of a reference image.
    Markdown {
        /// The destination as written (inside `<...>` when it is written so).
        range: Range<usize>,
        /// The destination, unescaped (backslash escapes and entities decoded).
        value: String,
        /// Written `<url>`.
        pointy: bool,
    },
    /// An HTML tag with at least one attribute that holds image URLs.
    Tag(HtmlTag),
}

/// An HTML start tag that holds image URLs: `<img>`, `<source>`, `<video poster>`, an image `<meta>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlTag {
    /// The tag name, lowercase.
    pub name: String,
    /// Every attribute name of the tag, lowercase, in document order (to tell whether one is present).
    pub attribute_names: Vec<String>,
    /// The attributes that hold image URLs, in document order.
    pub values: Vec<HtmlValue>,
    /// Where a new attribute goes: just after the last attribute (or the tag name), before any whitespace, `/`
    /// and the closing `>`.
    pub insert_at: usize,
    /// The quote the tag's own attributes use (the first quoted value's), `"` when none is quoted.
    pub quote: char,
}

/// An attribute value holding one image URL or a srcset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlValue {
    /// The attribute name, lowercase.
    pub attribute: String,
    /// The value with character references decoded.
    pub value: String,
    /// The value as written, inside its quotes.
    pub range: Range<usize>,
    /// `'` or `"`, or `None` for an unquoted value.
    pub quote: Option<char>,
    /// A srcset (candidates with descriptors) rather than one URL.
    pub srcset: bool,
}

impl HtmlTag {
    /// Whether the tag has an attribute named `name` (lowercase).
    pub fn has(&self, name: &str) -> bool {
        self.attribute_names.iter().any(|present| present == name)
    }

    /// The URL-holding attribute named `name`, if the tag has it.
    pub fn value(&self, name: &str) -> Option<&HtmlValue> {
        self.values.iter().find(|value| value.attribute == name)
    }
}

impl Spot {
    /// Moves every byte offset by `by` (the scanners see the text after a byte-order mark).
    pub(super) fn shifted(self, by: usize) -> Spot {
        let shift = |range: Range<usize>| range.start + by..range.end + by;
        match self {
            Spot::FrontMatter { range, value, quote } => Spot::FrontMatter { range: shift(range), value, quote },
            Spot::Markdown { range, value, pointy } => Spot::Markdown { range: shift(range), value, pointy },
            Spot::Tag(mut tag) => {
                tag.insert_at += by;
                for value in &mut tag.values {
                    value.range = shift(value.range.clone());
                }
                Spot::Tag(tag)
            }
        }
    }
}
