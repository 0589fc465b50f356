//! `mirage rewrite`: points the images of a blog's articles at Mirage, in place (`--in-place`), into another
//! directory (`--out`) or as a diff (`--dry-run`). The edit itself is `mirage::rewrite`'s; here are the files, the
//! cache lookups for image sizes, the writes (temporary file, fsync, rename: a file is either the old one or the
//! new one, never half of each) and the summary.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mirage::config::RewriteArgs;
use mirage::request::{ImageRequest, Target};
use mirage::rewrite::{Outcome, RewriteOptions, Rewriter, parse_widths, unified_diff};
use mirage::warm::extract;

/// Exit code when the command line cannot be run as given.
const USAGE: u8 = 2;

/// Runs `mirage rewrite`. Exit codes: 0 when every file was rewritten (or had nothing to rewrite), 1 when any
/// file could not be read or written (the others are still done), 2 for usage errors.
pub fn run(args: &RewriteArgs) -> ExitCode {
    if args.extract.inputs.iter().any(|input| input.as_os_str() == "-") {
        eprintln!("mirage rewrite: `-` (standard input) cannot be rewritten: name the files");
        return ExitCode::from(USAGE);
    }
    let widths = match parse_widths(&args.widths) {
        Ok(widths) => widths,
        Err(error) => {
            eprintln!("mirage rewrite: {error}");
            return ExitCode::from(USAGE);
        }
    };
    let cache_dir = match cache_dir(args) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("mirage rewrite: {error}");
            return ExitCode::from(USAGE);
        }
    };
    let rewriter = Rewriter::new(RewriteOptions {
        base: args.base.clone(),
        widths,
        hotlinks: !args.keep_hotlinks,
        proxy_prefixes: args.extract.proxy_prefixes.clone(),
    });
    let size_of = |target: &Target| -> Option<(u32, u32)> {
        let dir = cache_dir.as_deref()?;
        let entry = mirage_cache::inspect::read_entry(dir, &ImageRequest::source_key_of(target)).ok()??;
        mirage::transform::displayed_size(entry.body())
    };
    let mut run = Run::default();
    let mut stdout = std::io::stdout().lock();
    for input in &args.extract.inputs {
        let files = match extract::files_of(input, &args.extract.extensions) {
            Ok(files) => files,
            Err(error) => {
                run.fail(&error.to_string());
                continue;
            }
        };
        for file in files {
            let destination = args.out.as_ref().map(|out| out.join(relative_to_input(input, &file)));
            if let Some(destination) = &destination
                && !run.destinations.insert(destination.clone())
            {
                run.fail(&format!(
                    "{}: another input was already written to {}",
                    file.display(),
                    destination.display()
                ));
                continue;
            }
            let (old, outcome) = match rewrite_file(&rewriter, &file, &size_of) {
                Ok(read) => read,
                Err(error) => {
                    run.fail(&error);
                    continue;
                }
            };
            let changed = outcome.rewritten_count() > 0;
            if args.dry_run {
                let new_name = destination.as_ref().unwrap_or(&file);
                let diff =
                    unified_diff(&old, &outcome.text, &file.display().to_string(), &new_name.display().to_string());
                // A closed stdout (`| head`) is not a failure of the rewrite; the summary still goes to stderr.
                let _ = stdout.write_all(diff.as_bytes());
            } else if let Some(destination) = &destination {
                let written = destination
                    .parent()
                    .map_or(Ok(()), fs::create_dir_all)
                    .and_then(|()| write_atomically(destination, &outcome.text, fs::metadata(&file).ok().as_ref()));
                if let Err(error) = written {
                    run.fail(&format!("cannot write {}: {error}", destination.display()));
                    continue;
                }
            } else if changed
                && let Err(error) = write_atomically(&file, &outcome.text, fs::metadata(&file).ok().as_ref())
            {
                run.fail(&format!("cannot write {}: {error}", file.display()));
                continue;
            }
            run.add(&outcome);
        }
    }
    let _ = stdout.flush();
    eprint!("{}", run.summary(args.dry_run));
    if run.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The cache directory to read image sizes from: the one named (which must exist), else `serve`'s default when it
/// exists, else none (no `width`/`height` then).
fn cache_dir(args: &RewriteArgs) -> Result<Option<PathBuf>, String> {
    match &args.cache.cache_dir {
        Some(dir) if dir.is_dir() => Ok(Some(dir.clone())),
        Some(dir) => Err(format!("--cache-dir {} is not a directory", dir.display())),
        None => Ok(args.cache.resolve().ok().filter(|dir| dir.is_dir())),
    }
}

/// Reads and rewrites one file: its text and what became of it; the error says which file and why.
fn rewrite_file(
    rewriter: &Rewriter,
    file: &Path,
    size_of: &dyn Fn(&Target) -> Option<(u32, u32)>,
) -> Result<(String, Outcome), String> {
    let bytes = fs::read(file).map_err(|error| format!("cannot read {}: {error}", file.display()))?;
    // Rewriting a file that is not UTF-8 through a lossy decoding would change bytes far from any URL.
    let text = String::from_utf8(bytes).map_err(|_| format!("cannot rewrite {}: not UTF-8 text", file.display()))?;
    let extension = file.extension().and_then(|extension| extension.to_str()).map(str::to_ascii_lowercase);
    let outcome = rewriter.rewrite(&text, extension.as_deref(), size_of);
    Ok((text, outcome))
}

/// Where `file` goes below `--out`: its path below a directory input, or its name for a file input.
fn relative_to_input(input: &Path, file: &Path) -> PathBuf {
    match file.strip_prefix(input) {
        Ok(relative) if !relative.as_os_str().is_empty() => relative.to_path_buf(),
        _ => file.file_name().map_or_else(|| file.to_path_buf(), PathBuf::from),
    }
}

/// Writes `text` to `path` through a temporary file beside it (fsync, then rename), so that a crash or a full
/// disk leaves the old file or the new one, never a mix; the file keeps the permissions of `like`.
fn write_atomically(path: &Path, text: &str, like: Option<&fs::Metadata>) -> std::io::Result<()> {
    // A symlink (a post shared between two places) stays a link: the file it points at is the one replaced, and
    // the temp file is made beside that file, so the rename stays on one file system.
    let real = fs::canonicalize(path).ok().filter(|_| fs::symlink_metadata(path).is_ok_and(|meta| meta.is_symlink()));
    let path = real.as_deref().unwrap_or(path);
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.mirage-rewrite-{}", std::process::id()));
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(text.as_bytes())?;
        if let Some(like) = like {
            file.set_permissions(like.permissions())?;
        }
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// What the run did, for the summary.
#[derive(Debug, Default)]
struct Run {
    files: usize,
    changed: usize,
    failed: usize,
    rewritten: BTreeMap<String, usize>,
    left: BTreeMap<String, usize>,
    destinations: HashSet<PathBuf>,
}

impl Run {
    fn add(&mut self, outcome: &Outcome) {
        self.files += 1;
        if outcome.rewritten_count() > 0 {
            self.changed += 1;
        }
        for (source, count) in &outcome.rewritten {
            *self.rewritten.entry(source.clone()).or_default() += count;
        }
        for (reason, count) in &outcome.left {
            *self.left.entry(reason.clone()).or_default() += count;
        }
    }

    /// Reports a file that could not be rewritten, at once (the summary counts it).
    fn fail(&mut self, message: &str) {
        eprintln!("mirage rewrite: {message}");
        self.failed += 1;
    }

    /// `mirage rewrite: 3 files, 2 changed, 5 URLs rewritten, 0 failed`, then the URLs by source and those left.
    fn summary(&self, dry_run: bool) -> String {
        let rewritten: usize = self.rewritten.values().sum();
        let mut out = format!(
            "mirage rewrite{}: {} {}, {} changed, {rewritten} URLs rewritten, {} failed\n",
            if dry_run { " (dry run, nothing written)" } else { "" },
            self.files,
            if self.files == 1 { "file" } else { "files" },
            self.changed,
            self.failed
        );
        for (source, count) in &self.rewritten {
            let _ = writeln!(out, "  from {source}: {count}");
        }
        if !self.left.is_empty() {
            let left: Vec<String> = self
                .left
                .iter()
                .map(|(reason, count)| match reason.as_str() {
                    "hotlink" => format!("{count} hotlink (--keep-hotlinks)"),
                    _ => format!("{count} {reason}"),
                })
                .collect();
            let _ = writeln!(out, "  left alone: {}", left.join(", "));
        }
        out
    }
}
