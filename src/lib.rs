//! Mirage: an image proxy and caching service.
//!
//! The modules follow a request's way through the system: `server` accepts connections, `handler` turns one
//! HTTP request into a `request::ImageRequest`, `pipeline` answers it from the cache tiers or by `fetch`ing
//! upstream, and `respond` writes the answer. `error` is the one place where failures become HTTP statuses.

pub mod admin;
pub mod config;
pub mod error;
pub mod fallback;
pub mod fetch;
pub mod freshness;
pub mod handler;
pub mod metrics;
pub mod pipeline;
// The pipeline's clock-driven tests check what clients are told too, so they sit beside `pipeline` and
// `respond` rather than inside `pipeline` (which `respond` imports).
#[cfg(test)]
mod pipeline_tests;
pub mod request;
pub mod respond;
pub mod rewrite;
pub mod server;
pub mod signing;
pub mod sniff;
pub mod telemetry;
pub mod transform;
pub mod upstream_health;
pub mod warm;
pub mod workers;
