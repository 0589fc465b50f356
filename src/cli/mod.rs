//! The commands of the `mirage` binary that print and return an exit code: `sign`, `urls`, `warm`, `purge`,
//! `cache` and `rewrite`. The library
//! keeps the reusable parts (signing, URL extraction, the warm engine and its report); here they meet the terminal.

pub mod cache;
mod progress;
pub mod purge;
pub mod rewrite;
pub mod sign;
mod signals;
pub mod urls;
pub mod warm;
