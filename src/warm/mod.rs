//! The `urls` and `warm` commands: find every image URL in a blog's articles, and fill the cache with them
//! (and with every variant the blog's theme uses) before traffic arrives.

pub mod extract;

use std::process::ExitCode;

use crate::config::{UrlsArgs, WarmArgs};

/// `mirage urls`: prints the distinct image URLs (placeholder until the extractor lands).
pub fn urls_command(args: &UrlsArgs) -> ExitCode {
    let options = extract::ExtractOptions {
        extensions: args.extract.extensions.clone(),
        proxy_prefixes: args.extract.proxy_prefixes.clone(),
    };
    match extract::extract(&args.extract.inputs, &options) {
        Ok(extraction) => {
            for found in extraction.urls {
                println!("{}", found.url);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mirage urls: {error}");
            ExitCode::from(2)
        }
    }
}

/// `mirage warm` (placeholder until the warmer lands).
pub async fn warm_command(_args: WarmArgs) -> ExitCode {
    eprintln!("mirage warm: not built yet");
    ExitCode::from(2)
}
