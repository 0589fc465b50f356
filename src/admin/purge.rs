//! `POST /purge`: removes a source image and every variant made from it.
//!
//! A placeholder until purge is built: it answers 501.

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::pipeline::Pipeline;
use crate::respond::Body;

/// Answers a purge request whose body lists the URLs to purge.
pub async fn answer(pipeline: &Pipeline, body: Bytes) -> Response<Body> {
    let _ = (pipeline, body);
    super::plain(StatusCode::NOT_IMPLEMENTED, "purge is not built yet\n")
}
