//! The URL grammar: what a request asks for, parsed once at the edge into typed values (pure, no I/O).

mod options;
mod target;

pub use options::{Fit, FormatChoice, Gravity, MAX_DIMENSION, OptionsError, Rgba, Rotate, Tenths, TransformOptions};
pub use target::{Target, TargetError};

use mirage_cache::CacheKey;

/// What one image request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The upstream image.
    pub target: Target,
}

impl ImageRequest {
    /// A request that mirrors `target` byte for byte.
    pub fn mirror(target: Target) -> ImageRequest {
        ImageRequest { target }
    }

    /// The cache key of the upstream original. Every spelling of one URL gives the same key.
    pub fn source_key(&self) -> CacheKey {
        CacheKey::from_parts(&[b"source", self.target.canonical().as_bytes()])
    }
}
