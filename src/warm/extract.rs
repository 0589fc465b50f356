//! PLACEHOLDER (lead): plain lists only, so the warm command can be built against the API. The extraction
//! helper replaces this file with the real HTML/markdown/YAML extractor, same public API.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where to look and what to strip.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Extensions read when recursing directories.
    pub extensions: Vec<String>,
    /// Proxy prefixes stripped in addition to the built-in ones.
    pub proxy_prefixes: Vec<String>,
}

/// One image URL found in the inputs (the first place it was seen).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundUrl {
    /// The upstream URL, proxy prefix stripped.
    pub url: String,
    /// The file it was found in (`-` for stdin).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// Whether it was behind a proxy prefix.
    pub proxied: bool,
}

/// Everything found in the inputs.
#[derive(Debug, Clone, Default)]
pub struct Extraction {
    /// Distinct URLs in order of first appearance.
    pub urls: Vec<FoundUrl>,
    /// Candidates dropped, counted by reason (`data:`, `relative`, ...).
    pub dropped: BTreeMap<String, usize>,
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
pub fn extract(inputs: &[PathBuf], _options: &ExtractOptions) -> Result<Extraction, ExtractError> {
    let mut extraction = Extraction::default();
    for path in inputs {
        let text = std::fs::read_to_string(path).map_err(|source| ExtractError::Read { path: path.clone(), source })?;
        for (index, line) in text.lines().enumerate() {
            let line_text = line.trim();
            if line_text.starts_with("http://") || line_text.starts_with("https://") {
                if extraction.urls.iter().any(|found| found.url == line_text) {
                    continue;
                }
                extraction.urls.push(FoundUrl {
                    url: line_text.to_owned(),
                    file: path.display().to_string(),
                    line: index + 1,
                    proxied: false,
                });
            }
        }
    }
    Ok(extraction)
}
