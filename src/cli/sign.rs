//! `mirage sign`: prints the signed path of a target URL or a request path.

use std::process::ExitCode;

use mirage::config::SignArgs;
use mirage::signing::sign_path;

/// The exit status of bad usage, like clap's own usage errors.
const USAGE: u8 = 2;

/// Prints the signed path on standard output. Exit status 2 for bad usage (no key, input that is not a target or a
/// request path).
pub fn run(args: &SignArgs) -> ExitCode {
    let Some(key) = &args.key else {
        eprintln!("mirage sign: no key: pass --key HEX or set MIRAGE_SIGNING_KEY");
        return ExitCode::from(USAGE);
    };
    match sign_path(key, &args.input) {
        Ok(path) => {
            println!("{path}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mirage sign: {error}");
            ExitCode::from(USAGE)
        }
    }
}
