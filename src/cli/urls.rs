//! `mirage urls`: prints the image URLs found in a blog's articles.

use std::io::Write;
use std::process::ExitCode;

use mirage::config::UrlsArgs;
use mirage::warm::extract::{self, ExtractOptions};

/// Prints the distinct image URLs found in the inputs, one per line in order of first appearance (or JSON lines
/// with file, line, url and proxied), and a count of the dropped candidates on stderr. Exit code: 0 on success, 2
/// when an input cannot be read, 1 when stdout cannot be written.
pub fn run(args: &UrlsArgs) -> ExitCode {
    let options = ExtractOptions {
        extensions: args.extract.extensions.clone(),
        proxy_prefixes: args.extract.proxy_prefixes.clone(),
    };
    let extraction = match extract::extract(&args.extract.inputs, &options) {
        Ok(extraction) => extraction,
        Err(error) => {
            eprintln!("mirage urls: {error}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = extraction
        .urls
        .iter()
        .try_for_each(|found| {
            if args.json {
                serde_json::to_writer(&mut stdout, found).map_err(std::io::Error::from)?;
                writeln!(stdout)
            } else {
                writeln!(stdout, "{}", found.url)
            }
        })
        .and_then(|()| stdout.flush());
    if let Some(summary) = extraction.dropped_summary() {
        eprintln!("{summary}");
    }
    match written {
        // `mirage urls ... | head` closing the pipe early is not a failure.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("mirage urls: cannot write to stdout: {error}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}
