//! Moves a blog's articles to Mirage: every image URL that goes through a known proxy (the CORS worker,
//! `--proxy-prefix`, any spelling `request::target_of_any_spelling` reads) or, when asked, a direct hotlink, is
//! pointed at Mirage, and nothing else in the file changes (pure: text in, text out; `mirage rewrite` does the I/O).
//!
//! The places are the extractor's (`warm::extract::spots`), so `rewrite` sees exactly the images `urls` and
//! `warm` see. Each becomes an edit of its byte range, and the bytes between edits are copied verbatim, which is
//! what keeps entities, quoting, whitespace, line endings and front-matter formatting as they were. Front matter
//! and markdown images get `{base}/?{target}`; HTML is `html`'s job (srcset, lazy loading, width and height).

mod diff;
mod html;

use std::collections::BTreeMap;
use std::ops::Range;

pub use diff::unified_diff;

use crate::request::{MAX_DIMENSION, Target, image_service_target};
use crate::warm::extract::{self, Normaliser, Spot};

/// The Mirage URL prefix the rewritten URLs start with: an absolute http(s) URL without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// `https://img.example.com` or `https://example.com/img`.
    text: String,
    /// Its host, lowercase.
    host: String,
}

impl Base {
    /// Reads `--base`: an absolute http(s) URL with a host, no query or fragment; a trailing `/` is dropped.
    pub fn parse(text: &str) -> Result<Base, String> {
        let url = url::Url::parse(text.trim()).map_err(|error| format!("--base {text}: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("--base {text}: not an http(s) URL"));
        }
        let host = url.host_str().filter(|host| !host.is_empty()).ok_or_else(|| format!("--base {text}: no host"))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("--base {text}: a base has no query or fragment"));
        }
        let host = host.to_ascii_lowercase();
        Ok(Base { text: url.as_str().trim_end_matches('/').to_owned(), host })
    }

    /// The base as written in rewritten URLs.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The mirror URL of `target`: `{base}/?{target}`.
    fn mirror(&self, target: &Target) -> String {
        format!("{}/?{}", self.text, target.canonical())
    }

    /// The transform URL of `target` at `width`, in the format the browser takes best.
    fn sized(&self, target: &Target, width: u32) -> String {
        format!("{}/width={width},format=auto/?{}", self.text, target.canonical())
    }
}

/// What `mirage rewrite` was asked to do.
#[derive(Debug, Clone)]
pub struct RewriteOptions {
    /// Where Mirage answers.
    pub base: Base,
    /// The widths of an `<img>`'s srcset, ascending, distinct, each 1..=`MAX_DIMENSION`, at least one.
    pub widths: Vec<u32>,
    /// Also point direct hotlinks (absolute http(s) images on any other host) at Mirage.
    pub hotlinks: bool,
    /// Proxy prefixes recognised besides the built-in CORS worker (`--proxy-prefix`).
    pub proxy_prefixes: Vec<String>,
}

/// Checks `--widths`: at least one, each 1..=8192; returned ascending without duplicates.
pub fn parse_widths(widths: &[u32]) -> Result<Vec<u32>, String> {
    // The transform's own range for `width`, so every srcset candidate is a URL the server accepts.
    if let Some(bad) = widths.iter().find(|width| !(1..=MAX_DIMENSION).contains(*width)) {
        return Err(format!("--widths: {bad} is not in 1..={MAX_DIMENSION}"));
    }
    let mut widths = widths.to_vec();
    widths.sort_unstable();
    widths.dedup();
    if widths.is_empty() {
        return Err("--widths: give at least one width".into());
    }
    Ok(widths)
}

/// What was done to one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The new text (equal to the input when nothing was rewritten).
    pub text: String,
    /// URLs rewritten, by where they pointed before: the proxy prefix as written without its scheme
    /// (`cors.zfour.workers.dev/?`), the host of a proxy dialect (`images.weserv.nl`), or `hotlink`.
    pub rewritten: BTreeMap<String, usize>,
    /// Image URLs left alone, by why: `already Mirage`, `hotlink` (without `--hotlinks`), `svg` (Mirage refuses
    /// SVG), `relative`, `data:`, `protocol-relative`, `malformed`, ...
    pub left: BTreeMap<String, usize>,
}

impl Outcome {
    /// How many URLs were rewritten.
    pub fn rewritten_count(&self) -> usize {
        self.rewritten.values().sum()
    }
}

/// What to do with one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Point it at Mirage; `source` is where it pointed (the key of `Outcome::rewritten`).
    Rewrite { target: Target, source: String },
    /// Leave it as it is, for this reason (the key of `Outcome::left`).
    Leave(&'static str),
}

/// One replacement of a byte range of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    range: Range<usize>,
    text: String,
}

/// Rewrites articles; built once per run.
#[derive(Debug, Clone)]
pub struct Rewriter {
    options: RewriteOptions,
    normaliser: Normaliser,
}

impl Rewriter {
    /// A rewriter for `options`.
    pub fn new(options: RewriteOptions) -> Rewriter {
        let normaliser = Normaliser::new(&options.proxy_prefixes);
        Rewriter { options, normaliser }
    }

    /// Rewrites one file's `text` (`extension` lowercase without the dot, which tells HTML from markdown as for
    /// `mirage urls`). `size_of` gives an original's displayed width and height when it is known (from the disk
    /// cache), for `<img width height>`.
    pub fn rewrite(
        &self,
        text: &str,
        extension: Option<&str>,
        size_of: &dyn Fn(&Target) -> Option<(u32, u32)>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let mut edits = Vec::new();
        for spot in extract::spots(text, extension, &self.options.proxy_prefixes) {
            match spot {
                Spot::FrontMatter { range, value, quote } => {
                    if let Some(target) = self.judge(&value, &mut outcome) {
                        let url = self.options.base.mirror(&target);
                        edits.push(Edit { range, text: yaml_escape(&url, quote) });
                    }
                }
                Spot::Markdown { range, value, pointy } => {
                    if let Some(target) = self.judge(&value, &mut outcome) {
                        let url = self.options.base.mirror(&target);
                        edits.push(Edit { range, text: markdown_escape(&url, pointy) });
                    }
                }
                Spot::Tag(tag) => html::rewrite_tag(self, &tag, size_of, &mut outcome, &mut edits),
            }
        }
        outcome.text = apply(text, edits);
        outcome
    }

    /// Classifies `raw` and counts the verdict: the target when it is to be rewritten.
    fn judge(&self, raw: &str, outcome: &mut Outcome) -> Option<Target> {
        match self.classify(raw) {
            Verdict::Rewrite { target, source } => {
                *outcome.rewritten.entry(source).or_default() += 1;
                Some(target)
            }
            Verdict::Leave(reason) => {
                *outcome.left.entry(reason.to_owned()).or_default() += 1;
                None
            }
        }
    }

    /// Whether `raw` (entities and escapes already decoded) is to be pointed at Mirage, and at which target.
    fn classify(&self, raw: &str) -> Verdict {
        let text = raw.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0C'));
        let base = self.options.base.as_str();
        if starts_with_ignore_case(text, base) && text[base.len()..].starts_with('/') {
            return Verdict::Leave("already Mirage");
        }
        let (target, source) = if let Some((rest, prefix)) = self.normaliser.peel(text) {
            if rest.starts_with("//") {
                return Verdict::Leave("protocol-relative");
            }
            match Target::parse(rest) {
                Ok(target) => (target, without_scheme(prefix).to_ascii_lowercase()),
                Err(_) => return Verdict::Leave("malformed"),
            }
        } else {
            if text.starts_with("//") {
                return Verdict::Leave("protocol-relative");
            }
            if !(starts_with_ignore_case(text, "http://") || starts_with_ignore_case(text, "https://")) {
                return Verdict::Leave(if starts_with_ignore_case(text, "data:") { "data:" } else { "relative" });
            }
            let Ok(direct) = Target::parse(text) else { return Verdict::Leave("malformed") };
            let host = direct.url().host_str().unwrap_or_default().to_ascii_lowercase();
            if host == self.options.base.host {
                return Verdict::Leave("on the Mirage host");
            }
            match image_service_target(text) {
                // A proxy's own spelling (the CORS form on any host, or a dialect): its target, not the URL.
                Some(target) => (target, host),
                None if self.options.hotlinks => (direct, "hotlink".to_owned()),
                None => return Verdict::Leave("hotlink"),
            }
        };
        // Mirage relays images only, and SVG is a document that can carry script: it answers 415, so an SVG
        // stays where it worked.
        if target.url().path().to_ascii_lowercase().ends_with(".svg") {
            return Verdict::Leave("svg");
        }
        Verdict::Rewrite { target, source }
    }
}

/// Applies non-overlapping `edits` to `text`, copying every other byte as it is. An edit overlapping an earlier
/// one is dropped (the same place reached twice, e.g. one reference definition used by two images).
fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|edit| (edit.range.start, edit.range.end));
    let mut out = String::with_capacity(text.len() + edits.iter().map(|edit| edit.text.len()).sum::<usize>());
    let mut copied = 0;
    for edit in edits {
        let fits = edit.range.start >= copied && edit.range.end <= text.len();
        let on_boundaries = text.is_char_boundary(edit.range.start) && text.is_char_boundary(edit.range.end);
        if !(fits && on_boundaries) {
            continue;
        }
        out.push_str(&text[copied..edit.range.start]);
        out.push_str(&edit.text);
        copied = edit.range.end;
    }
    out.push_str(&text[copied..]);
    out
}

/// `url` as the contents of a YAML scalar quoted with `quote` (or plain): `''` in single quotes, `\"` and `\\` in
/// double quotes. A canonical URL has no whitespace, so it is a valid plain scalar as it is.
fn yaml_escape(url: &str, quote: Option<char>) -> String {
    match quote {
        Some('\'') => url.replace('\'', "''"),
        Some('"') => url.replace('\\', "\\\\").replace('"', "\\\""),
        _ => url.to_owned(),
    }
}

/// `url` as a markdown destination: parentheses escaped outside `<...>` (a canonical URL has no spaces, `<` or
/// `>`), and a `&` that would start a character reference escaped, so that the parser reads back `url` itself.
fn markdown_escape(url: &str, pointy: bool) -> String {
    let mut out = String::with_capacity(url.len());
    for (at, c) in url.char_indices() {
        let escape = match c {
            '(' | ')' => !pointy,
            '\\' => true,
            '&' => starts_reference(&url[at + 1..]),
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether the text after a `&` makes it a character reference (`amp;`, `#38;`, `#x26;`).
fn starts_reference(rest: &str) -> bool {
    let Some(end) = rest.find(';') else { return false };
    let name = &rest[..end];
    let numeric = name.strip_prefix('#').map(|digits| digits.strip_prefix(['x', 'X']).unwrap_or(digits));
    match numeric {
        Some(digits) => !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit()),
        None => !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
    }
}

/// `prefix` without `https://`, `http://` or `//`.
fn without_scheme(prefix: &str) -> &str {
    ["https://", "http://", "//"]
        .iter()
        .find_map(|scheme| prefix.get(..scheme.len()).filter(|head| head.eq_ignore_ascii_case(scheme)))
        .map_or(prefix, |head| &prefix[head.len()..])
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests;
