//! The reusable parts of the `urls` and `warm` commands: finding every image URL in a blog's articles
//! (`extract`), filling the cache with them and every variant the blog's theme uses before traffic arrives
//! (`warmer`), and what a run did (`report`). The commands themselves, which print and exit, are the binary's
//! (`src/cli/`).

pub mod extract;
pub mod report;
pub mod warmer;
