//! Why a transform failed, in terms the pipeline can turn into an HTTP status (see each variant).

/// A transform failure. The variant decides the status; the text is for the log (it may quote decoder and
/// encoder internals): clients see only `crate::error::Error::public`'s text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The source's header declares more pixels than `Limits::max_source_pixels` (checked before decoding): 413.
    #[error("source image is {width}x{height}, over the limit of {limit} pixels")]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The configured pixel limit.
        limit: u64,
    },
    /// The requested output would exceed `Limits::max_output_pixels`: 413.
    #[error("output image would be {width}x{height}, over the limit of {limit} pixels")]
    OutputTooLarge {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
        /// The configured pixel limit.
        limit: u64,
    },
    /// An explicit `format=avif` whose output would exceed `Limits::max_avif_pixels` (`format=auto` falls back to
    /// WebP instead): 400, as the client can ask for a smaller size or another format.
    #[error("AVIF output would be {width}x{height}, over the limit of {limit} pixels")]
    AvifTooLarge {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
        /// The configured AVIF pixel limit.
        limit: u64,
    },
    /// Truncated, corrupt or otherwise unreadable source: 422.
    #[error("cannot decode the source image: {0}")]
    Undecodable(String),
    /// A source format this build cannot decode (AVIF, BMP, ICO...): 415.
    #[error("cannot transform {0} images")]
    UnsupportedSource(&'static str),
    /// An output format this build cannot encode (AVIF): 400.
    #[error("output format {0} is not supported by this server")]
    UnsupportedOutput(&'static str),
    /// An animation with more frames than `Limits::max_frames`: 413.
    #[error("animation has {frames} frames, over the limit of {limit}")]
    TooManyFrames {
        /// Frames in the source.
        frames: u32,
        /// The configured frame limit.
        limit: u32,
    },
    /// The encoder failed (a bug or resource exhaustion, not the client's fault): 500.
    #[error("cannot encode the image: {0}")]
    Encode(String),
}
