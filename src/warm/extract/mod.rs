//! Finds the upstream image URLs in a blog's articles: YAML front matter, markdown images, HTML `<img>` and
//! `<source>`, and plain lists of URLs, with proxy prefixes stripped and every URL validated and canonicalised
//! by the server's own `Target::parse` (so each printed URL is exactly what the server will cache).
//!
//! What a file is comes from its content, not only its extension: leading `---` front matter makes it an
//! article (front matter, then a markdown body, or an HTML body for `.html`/`.htm`); a file whose non-empty
//! lines are each a single `scheme:...` or `/...` token is a plain list; a `.html`/`.htm` file or one starting with
//! `<!doctype`/`<html` is HTML; anything else is markdown (whose HTML blocks go through the HTML tokenizer).
//!
//! URLs are printed in the canonical form of the `url` crate: non-ASCII paths percent-encoded as UTF-8
//! (`/图片/a.jpg` → `/%E5%9B%BE%E7%89%87/a.jpg`), hosts lowercased (IDNA), default ports and fragments removed.
//! Two spellings of one URL are one URL. Protocol-relative `//host/a.jpg` is dropped (`protocol-relative`):
//! an article file does not know the scheme of the page that will show it.
//!
//! The same scanners also say where each URL is written ([`spots`]: byte ranges, quoting, the attributes of its
//! tag), which is how `mirage rewrite` edits articles without an extractor of its own.

mod candidate;
mod front_matter;
mod html;
mod markdown;
mod spot;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

pub(crate) use candidate::Normaliser;
use candidate::{Candidate, is_html_whitespace, starts_with_scheme};
pub(crate) use html::srcset_urls;
pub use spot::{HtmlTag, HtmlValue, Spot};

/// Extensions read when recursing directories if none are given.
const DEFAULT_EXTENSIONS: [&str; 5] = ["md", "markdown", "html", "htm", "txt"];

/// Where to look and what to strip.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Extensions read when recursing directories (without the dot, any case; empty means the default
    /// `md`, `markdown`, `html`, `htm`, `txt`). Files named as inputs are read whatever their extension.
    pub extensions: Vec<String>,
    /// Proxy prefixes stripped in addition to the built-in ones.
    pub proxy_prefixes: Vec<String>,
}

/// One image URL found in the inputs (the first place it was seen).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundUrl {
    /// The file it was found in (`-` for stdin).
    pub file: String,
    /// 1-based line number where the URL's text starts.
    pub line: usize,
    /// The upstream URL, proxy prefix stripped, in canonical form.
    pub url: String,
    /// Whether it was behind a proxy prefix.
    pub proxied: bool,
}

/// Everything found in the inputs.
#[derive(Debug, Clone, Default)]
pub struct Extraction {
    /// Distinct URLs in order of first appearance.
    pub urls: Vec<FoundUrl>,
    /// Candidates dropped, counted by reason: `data:`, `javascript:`, `ftp:` (any other scheme, with its
    /// name), `relative`, `protocol-relative`, `empty`, `malformed`. Duplicates are not drops.
    pub dropped: BTreeMap<String, usize>,
}

impl Extraction {
    /// `dropped 3 candidates: 1 data:, 2 relative`, or `None` when nothing was dropped.
    pub fn dropped_summary(&self) -> Option<String> {
        let total: usize = self.dropped.values().sum();
        if total == 0 {
            return None;
        }
        let counts: Vec<String> = self.dropped.iter().map(|(reason, count)| format!("{count} {reason}")).collect();
        let noun = if total == 1 { "candidate" } else { "candidates" };
        Some(format!("dropped {total} {noun}: {}", counts.join(", ")))
    }
}

/// Why the inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Reads every input (files, directories, `-` for stdin) and returns the distinct image URLs.
///
/// Directories are recursed (files with one of `options.extensions`, in sorted path order, skipping entries
/// whose name starts with `.` and not following symlinked directories). Stops at the first input that cannot
/// be read. Files that are not UTF-8 are read lossily (URLs are ASCII or percent-encoded in practice).
pub fn extract(inputs: &[PathBuf], options: &ExtractOptions) -> Result<Extraction, ExtractError> {
    let normaliser = Normaliser::new(&options.proxy_prefixes);
    let extensions = wanted_extensions(&options.extensions);
    let mut collected = Collected::default();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::stdin().lock().read_to_end(&mut bytes).map_err(|source| read_error(input, source))?;
            scan_text(&String::from_utf8_lossy(&bytes), "-", None, &normaliser, &mut collected);
            continue;
        }
        for file in files_of(input, &extensions)? {
            let bytes = std::fs::read(&file).map_err(|source| read_error(&file, source))?;
            let extension = file.extension().and_then(|extension| extension.to_str()).map(str::to_ascii_lowercase);
            let name = file.display().to_string();
            scan_text(&String::from_utf8_lossy(&bytes), &name, extension.as_deref(), &normaliser, &mut collected);
        }
    }
    Ok(collected.extraction)
}

/// The files an input names: itself, or for a directory the files under it with one of `extensions` (any case,
/// without the dot; empty means the default ones), in sorted path order, as [`extract`] reads them.
pub fn files_of(input: &Path, extensions: &[String]) -> Result<Vec<PathBuf>, ExtractError> {
    let metadata = std::fs::metadata(input).map_err(|source| read_error(input, source))?;
    if !metadata.is_dir() {
        return Ok(vec![input.to_owned()]);
    }
    let extensions = wanted_extensions(extensions);
    let mut files = Vec::new();
    walk(input, &extensions, &mut files)?;
    files.sort();
    Ok(files)
}

/// Every place in one file's `text` that holds an image URL, with its byte range, found by the same scanners
/// and the same rules as [`extract`] (`extension` lowercase, without the dot; `proxy_prefixes` as in
/// [`ExtractOptions`]). Plain lists of URLs are not articles and yield nothing; neither do values written with
/// escapes that would make the text at the range differ from the value.
pub fn spots(text: &str, extension: Option<&str>, proxy_prefixes: &[String]) -> Vec<Spot> {
    let normaliser = Normaliser::new(proxy_prefixes);
    let mut collected = Collected::default();
    let mut spots = Vec::new();
    scan_file(text, "-", extension, &normaliser, &mut collected, Some(&mut spots));
    let bom = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    spots.into_iter().map(|spot| spot.shifted(bom)).collect()
}

fn wanted_extensions(extensions: &[String]) -> Vec<String> {
    if extensions.is_empty() {
        DEFAULT_EXTENSIONS.iter().map(|extension| (*extension).to_owned()).collect()
    } else {
        extensions.iter().map(|extension| extension.trim().trim_start_matches('.').to_ascii_lowercase()).collect()
    }
}

fn read_error(path: &Path, source: std::io::Error) -> ExtractError {
    ExtractError::Read { path: path.to_owned(), source }
}

/// Adds the files under `dir` with a wanted extension to `files`.
fn walk(dir: &Path, extensions: &[String], files: &mut Vec<PathBuf>) -> Result<(), ExtractError> {
    for entry in std::fs::read_dir(dir).map_err(|source| read_error(dir, source))? {
        let entry = entry.map_err(|source| read_error(dir, source))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(|source| read_error(&path, source))?;
        if file_type.is_dir() {
            walk(&path, extensions, files)?;
            continue;
        }
        // A symlink to a file is read; one to a directory is not followed (it could loop).
        let is_file = file_type.is_file() || (file_type.is_symlink() && path.is_file());
        let wanted = path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| extensions.iter().any(|wanted| wanted.eq_ignore_ascii_case(extension)));
        if is_file && wanted {
            files.push(path);
        }
    }
    Ok(())
}

/// The URLs seen so far, across files.
#[derive(Debug, Default)]
struct Collected {
    extraction: Extraction,
    seen: HashSet<String>,
}

/// Reads one file's text (any kind) into `collected`.
fn scan_text(text: &str, file: &str, extension: Option<&str>, normaliser: &Normaliser, collected: &mut Collected) {
    scan_file(text, file, extension, normaliser, collected, None);
}

/// Reads one file's text into `collected`, and into `spots` the place of every URL when asked (offsets in the
/// text after a byte-order mark).
fn scan_file(
    text: &str,
    file: &str,
    extension: Option<&str>,
    normaliser: &Normaliser,
    collected: &mut Collected,
    spots: Option<&mut Vec<Spot>>,
) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = LineIndex::new(text);
    let mut sink = Sink { file, lines: &lines, normaliser, collected, spots };
    let html_extension = matches!(extension, Some("html" | "htm"));
    if let Some((yaml, body)) = front_matter::split(text) {
        front_matter::scan(&text[yaml.clone()], yaml.start, &mut sink);
        if html_extension {
            html::scan(&text[body..], body, &mut sink);
        } else {
            markdown::scan(&text[body..], body, &mut sink);
        }
    } else if is_plain_list(text) {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let url = line.trim_matches(is_html_whitespace);
            if !url.is_empty() {
                let at = sink.line_at(offset);
                sink.offer(url, at);
            }
            offset += line.len();
        }
    } else if html_extension || looks_like_html_document(text) {
        html::scan(text, 0, &mut sink);
    } else {
        markdown::scan(text, 0, &mut sink);
    }
}

/// Whether every non-empty line is one URL-like token (`scheme:...`, or a path `/...` to be counted as
/// relative), and there is one at least.
fn is_plain_list(text: &str) -> bool {
    let mut tokens = text.lines().map(|line| line.trim_matches(is_html_whitespace)).filter(|line| !line.is_empty());
    let mut any = false;
    let all = tokens.all(|token| {
        any = true;
        !token.contains(is_html_whitespace) && (starts_with_scheme(token) || token.starts_with('/'))
    });
    any && all
}

fn looks_like_html_document(text: &str) -> bool {
    let head = text.trim_start();
    ["<!doctype", "<html"]
        .iter()
        .any(|opening| head.get(..opening.len()).is_some_and(|start| start.eq_ignore_ascii_case(opening)))
}

/// Byte offset → 1-based line number.
#[derive(Debug)]
struct LineIndex {
    /// Byte offset of the start of every line.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(at, _)| at + 1)).collect();
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset).max(1)
    }
}

/// Where the scanners of one file send their candidates.
struct Sink<'a> {
    file: &'a str,
    lines: &'a LineIndex,
    normaliser: &'a Normaliser,
    collected: &'a mut Collected,
    /// Where URLs are written, collected only for [`spots`].
    spots: Option<&'a mut Vec<Spot>>,
}

impl Sink<'_> {
    /// The 1-based line of a byte offset in the file.
    fn line_at(&self, offset: usize) -> usize {
        self.lines.line(offset)
    }

    fn normaliser(&self) -> &Normaliser {
        self.normaliser
    }

    /// Whether the scanners should say where URLs are written (building a spot costs allocations).
    fn wants_spots(&self) -> bool {
        self.spots.is_some()
    }

    /// Records where a URL is written.
    fn spot(&mut self, spot: Spot) {
        if let Some(spots) = self.spots.as_mut() {
            spots.push(spot);
        }
    }

    /// Normalises one raw candidate found at `line`: records it if new, counts it if dropped.
    fn offer(&mut self, raw: &str, line: usize) {
        match self.normaliser.normalise(raw) {
            Candidate::Url { url, proxied } => {
                if self.collected.seen.insert(url.clone()) {
                    let found = FoundUrl { file: self.file.to_owned(), line, url, proxied };
                    self.collected.extraction.urls.push(found);
                }
            }
            Candidate::Dropped(reason) => *self.collected.extraction.dropped.entry(reason).or_default() += 1,
        }
    }
}

#[cfg(test)]
mod tests;
