//! `mirage rewrite`, black-box: the real binary on copies of real-looking posts (the seed article, an HTML post
//! with entities, single quotes, CRLF and front matter, a markdown post with every kind of image) in temporary
//! directories. Outputs are compared with committed files byte for byte, checked to differ from their inputs
//! only in URLs and added `<img>` attributes, run twice, and read back by `mirage urls`; sizes come from a cache
//! that `mirage warm` filled from a loopback upstream.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Route, Upstream, fixture, photo};

const BASE: &str = "https://img.example.com";
/// A proxy prefix that `target_of_any_spelling` does not read by itself: only `--proxy-prefix` makes it one.
const OLD_PROXY: &str = "https://old-proxy.example.net/fetch?url=";
const CORS: &str = "https://cors.zfour.workers.dev/?";
const SUMMARY: &str = "files, 3 changed, 18 URLs rewritten, 0 failed\n  from cors.zfour.workers.dev/?: 16\n  from \
                       old-proxy.example.net/fetch?url=: 2\n  left alone: 1 already Mirage, 1 data:, 3 hotlink \
                       (--keep-hotlinks), 2 relative, 1 svg\n";

fn fixtures(which: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rewrite").join(which)
}

/// `mirage {args}` with no MIRAGE_* variable of the test's environment leaking in, and a default cache directory
/// (under `home`) that holds nothing unless a test fills it.
fn mirage(args: &[&str], home: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirage"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MIRAGE_") {
            command.env_remove(name);
        }
    }
    command.env("XDG_CACHE_HOME", home.join("cache")).env_remove("RUST_LOG").args(args).stdin(Stdio::null());
    command.output().expect("run mirage")
}

/// `mirage rewrite` with `--keep-hotlinks`: the golden files keep the posts' hotlinks, so that each shows every
/// kind of URL left alone (`hotlinks_move_by_default_and_svg_never` runs the default).
fn rewrite(args: &[&str], home: &Path) -> Output {
    let mut all = vec!["rewrite", "--base", BASE, "--proxy-prefix", OLD_PROXY, "--keep-hotlinks"];
    all.extend_from_slice(args);
    mirage(&all, home)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let relative = path.strip_prefix(root).expect("below root").to_path_buf();
                files.insert(relative, fs::read(&path).expect("read file"));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// Copies the fixture inputs into `dir`.
fn copy_inputs(dir: &Path) {
    for (relative, bytes) in tree(&fixtures("input")) {
        let target = dir.join(relative);
        fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        fs::write(target, bytes).expect("copy");
    }
}

/// Checks that `new` is `old` with URLs replaced and `<img>` attributes added, and nothing else: walking both,
/// every difference must start a URL in `old` that becomes a `{BASE}/...` URL in `new` (both running to the next
/// quote, bracket or whitespace), or be attributes inserted in `new` (` name="..."`, names from the rewrite's set).
fn assert_only_urls_changed(old: &str, new: &str, name: &str) {
    const ADDED: [&str; 6] = ["srcset", "sizes", "width", "height", "loading", "decoding"];
    let is_delimiter = |c: u8| matches!(c, b'"' | b'\'' | b'(' | b')' | b'<' | b'>') || c.is_ascii_whitespace();
    let (old, new) = (old.as_bytes(), new.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut rewritten = 0;
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            i += 1;
            j += 1;
            continue;
        }
        // Inserted attributes: ` name=Q...Q`, the leading space either here or just consumed as shared.
        let rest = &new[j..];
        let (lead, attribute) = if rest.first() == Some(&b' ') { (1, &rest[1..]) } else { (0, rest) };
        let inserted = ADDED.iter().find_map(|added| {
            let value = attribute.strip_prefix(added.as_bytes())?.strip_prefix(b"=")?;
            let quote = *value.first().filter(|quote| matches!(quote, b'"' | b'\''))?;
            let close = value[1..].iter().position(|c| *c == quote)?;
            let len = lead + added.len() + 1 + close + 2;
            // Without a leading space here, the shared one came first and the attribute brings its own after.
            let trailing = usize::from(lead == 0 && new.get(j + len) == Some(&b' '));
            Some(len + trailing)
        });
        if let Some(len) = inserted {
            j += len;
            continue;
        }
        // A URL: back up over the shared part of it, then skip it on both sides.
        let mut start = i;
        while start > 0 && !is_delimiter(old[start - 1]) {
            start -= 1;
        }
        let (old_start, new_start) = (start, j - (i - start));
        assert!(
            new[new_start..].starts_with(BASE.as_bytes()),
            "{name}: byte {old_start} changed outside a rewritten URL: old {:?}, new {:?}",
            String::from_utf8_lossy(&old[old_start..(old_start + 80).min(old.len())]),
            String::from_utf8_lossy(&new[new_start..(new_start + 80).min(new.len())]),
        );
        let end = |text: &[u8], from: usize| {
            from + text[from..].iter().position(|c| is_delimiter(*c)).unwrap_or(text.len() - from)
        };
        i = end(old, old_start);
        j = end(new, new_start);
        rewritten += 1;
    }
    assert!(rewritten > 0, "{name}: nothing was rewritten");
}

#[test]
fn golden_outputs_are_byte_exact_and_differ_only_in_urls() {
    let home = tempfile::tempdir().expect("tempdir");
    let input = home.path().join("input");
    let out = home.path().join("out");
    copy_inputs(&input);

    let output = rewrite(&["--out", path(&out), path(&input)], home.path());
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(stderr(&output), format!("mirage rewrite: 3 {SUMMARY}"));
    let expected = tree(&fixtures("expected"));
    assert_eq!(tree(&out).keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (relative, want) in &expected {
        let got = fs::read(out.join(relative)).expect("written");
        assert!(
            got == *want,
            "{} differs from the expected file:\n{}",
            relative.display(),
            String::from_utf8_lossy(&got)
        );
    }
    // The inputs are untouched, and every output differs from its input in URLs and added attributes only.
    assert_eq!(tree(&input), tree(&fixtures("input")));
    for (relative, old) in tree(&input) {
        let old = String::from_utf8(old).expect("UTF-8 input");
        let new = String::from_utf8(expected[&relative].clone()).expect("UTF-8 output");
        assert_only_urls_changed(&old, &new, &relative.display().to_string());
    }
    // The CRLF post keeps every line ending.
    let html = String::from_utf8(expected[Path::new("posts/entities.html")].clone()).expect("UTF-8");
    assert_eq!(html.matches("\r\n").count(), html.matches('\n').count());
}

#[test]
fn in_place_twice_changes_nothing_the_second_time() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("blog");
    copy_inputs(&dir);

    let first = rewrite(&["--in-place", path(&dir)], home.path());
    assert_eq!(first.status.code(), Some(0), "stderr: {}", stderr(&first));
    assert_eq!(tree(&dir), tree(&fixtures("expected")));
    let second = rewrite(&["--in-place", path(&dir)], home.path());
    assert_eq!(second.status.code(), Some(0), "stderr: {}", stderr(&second));
    assert!(
        stderr(&second).starts_with("mirage rewrite: 3 files, 0 changed, 0 URLs rewritten, 0 failed\n"),
        "{}",
        stderr(&second)
    );
    assert_eq!(tree(&dir), tree(&fixtures("expected")), "the second run changes no byte");
    // No temporary file is left beside the articles.
    assert_eq!(tree(&dir).len(), 3);
}

#[test]
fn dry_run_prints_a_diff_that_patch_applies_and_writes_nothing() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("blog");
    copy_inputs(&dir);
    let file = dir.join("posts/2022/markdown.md");

    let output = rewrite(&["--dry-run", path(&file)], home.path());
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(tree(&dir), tree(&fixtures("input")), "a dry run writes nothing");
    let name = path(&file);
    let m = format!("{BASE}/?https://pics.example.org");
    let expected = format!(
        "--- {name}\n+++ {name}\n@@ -1,18 +1,18 @@\n ---\n title: A markdown post\n-cover: {CORS}https://pics.example.org/md-cover.jpg\n\
         +cover: {m}/md-cover.jpg\n photos:\n-  - \"{OLD_PROXY}https%3A%2F%2Fpics.example.org%2Fp1.jpg\"\n+  - \"{m}/p1.jpg\"\n   - \
         https://pics.example.org/p2.jpg\n link: https://example.org/a-page\n ---\n \n-Intro with an image \
         ![inline]({CORS}https://pics.example.org/m1.jpg \"A title\") and a\n+Intro with an image ![inline]({m}/m1.jpg \"A \
         title\") and a\n [link to a picture]({CORS}https://pics.example.org/link.jpg), which is not an image.\n \n ![reference][shot]\n \n\
         -<img src=\"{OLD_PROXY}https%3A%2F%2Fpics.example.org%2Fm2.jpg\" width=\"300\" height=\"200\">\n\
         +<img src=\"{BASE}/width=1280,format=auto/?https://pics.example.org/m2.jpg\" width=\"300\" height=\"200\" \
         srcset=\"{BASE}/width=320,format=auto/?https://pics.example.org/m2.jpg 320w, \
         {BASE}/width=640,format=auto/?https://pics.example.org/m2.jpg 640w, \
         {BASE}/width=1280,format=auto/?https://pics.example.org/m2.jpg 1280w\" sizes=\"100vw\" loading=\"lazy\" \
         decoding=\"async\">\n \n     ![indented code]({CORS}https://pics.example.org/code.jpg)\n \n\
         @@ -22,4 +22,4 @@\n \n ![relative](images/local.png) ![hotlink](https://cdn.example.net/m3.jpg)\n \n\
         -[shot]: <{CORS}https://pics.example.org/shot.jpg> \"Screenshot\"\n+[shot]: <{m}/shot.jpg> \"Screenshot\"\n"
    );
    let diff = String::from_utf8(output.stdout.clone()).expect("UTF-8 diff");
    assert_eq!(diff, expected);
    assert_eq!(
        stderr(&output),
        "mirage rewrite (dry run, nothing written): 1 file, 1 changed, 5 URLs rewritten, 0 failed\n  from \
         cors.zfour.workers.dev/?: 3\n  from old-proxy.example.net/fetch?url=: 2\n  left alone: 2 hotlink \
         (--keep-hotlinks), 1 relative\n"
    );
    // The diff is a real one: `patch` turns the input into the expected output.
    let patched = Command::new("patch")
        .args(["--quiet", "-p0", "-i", "-"])
        .current_dir("/")
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), diff.as_bytes())?;
            child.wait()
        });
    if let Ok(status) = patched {
        assert!(status.success(), "patch refused the diff");
        assert_eq!(
            fs::read(&file).expect("patched"),
            fs::read(fixtures("expected/posts/2022/markdown.md")).expect("expected")
        );
    }
}

#[test]
fn a_file_that_cannot_be_written_fails_alone() {
    let home = tempfile::tempdir().expect("tempdir");
    let input = home.path().join("input");
    let out = home.path().join("out");
    copy_inputs(&input);
    // A directory where one output file should go: its rename fails, whoever runs the test (root included).
    fs::create_dir_all(out.join("posts/entities.html/blocked")).expect("mkdir");

    let output = rewrite(&["--out", path(&out), path(&input)], home.path());
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!("mirage rewrite: cannot write {}: ", path(&out.join("posts/entities.html")))),
        "{message}"
    );
    assert!(message.contains("2 files, 2 changed, 9 URLs rewritten, 1 failed\n"), "{message}");
    // The others are done, exactly, and nothing half-written or temporary is left (the blocking directory holds
    // no file).
    let written = tree(&out);
    let expected = tree(&fixtures("expected"));
    let names: Vec<&Path> = written.keys().map(PathBuf::as_path).collect();
    assert_eq!(names, [Path::new("000_daf4203bc5345fd9.txt"), Path::new("posts/2022/markdown.md")]);
    for (name, bytes) in &written {
        assert!(*bytes == expected[name], "{}", name.display());
    }
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().expect("tempdir");
    let input = home.path().join("input");
    copy_inputs(&input);
    let input = path(&input);
    for args in [
        vec![input],                               // no --in-place, --out or --dry-run
        vec!["--in-place", "--out", "x", input],   // both
        vec!["--dry-run", "--widths", "0", input], // a width out of range
        vec!["--dry-run", "-"],                    // standard input cannot be rewritten
        vec!["--dry-run", "--cache-dir", "/nonexistent/cache", input],
    ] {
        let output = rewrite(&args, home.path());
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
    }
    let output = mirage(&["rewrite", "--base", "img.example.com", "--dry-run", input], home.path());
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--base"), "{}", stderr(&output));
    assert_eq!(tree(Path::new(input)), tree(&fixtures("input")));
}

#[test]
fn a_missing_input_fails_but_the_others_are_rewritten() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("blog");
    copy_inputs(&dir);
    let missing = home.path().join("missing.md");

    let output = rewrite(&["--in-place", path(&missing), path(&dir)], home.path());
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).starts_with(&format!("mirage rewrite: cannot read {}: ", path(&missing))),
        "{}",
        stderr(&output)
    );
    assert_eq!(tree(&dir), tree(&fixtures("expected")));
}

/// The URLs `mirage urls` prints for `input`, with the old proxy and `extra` prefixes stripped.
fn urls(input: &Path, extra: &[&str], home: &Path) -> Vec<String> {
    let mut args = vec!["urls", "--proxy-prefix", OLD_PROXY];
    for prefix in extra {
        args.extend(["--proxy-prefix", prefix]);
    }
    args.push(path(input));
    let output = mirage(&args, home);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    String::from_utf8(output.stdout).expect("UTF-8").lines().map(str::to_owned).collect()
}

#[test]
fn urls_reads_the_same_images_from_the_rewritten_posts() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("blog");
    copy_inputs(&dir);
    // One image of the HTML post is on Mirage already: the prefix is stripped from the originals too.
    let mirage_prefix = format!("{BASE}/?");
    let before = urls(&dir, &[&mirage_prefix], home.path());
    assert_eq!(before.len(), 21, "{before:?}");

    let output = rewrite(&["--in-place", path(&dir)], home.path());
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(urls(&dir, &[&mirage_prefix], home.path()), before);
    // Mirage's own `{base}/?{target}` is the CORS form, which `urls` reads on any host, and its transform form
    // `{base}/{options}/?{target}` is a request in Mirage's grammar: without the prefix the list is the same too.
    assert_eq!(urls(&dir, &[], home.path()), before);
    // The posts did change: the lists are the same because every rewritten URL names the image it replaced.
    assert_ne!(tree(&dir), tree(&fixtures("input")));
}

// Multi-threaded: the loopback upstream must keep answering while the test blocks on `mirage warm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn width_and_height_come_from_originals_that_warm_cached() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    upstream.route("/b.jpg", Route::image(fixture("photo-500x345.jpg")));
    let home = tempfile::tempdir().expect("tempdir");
    let cache = home.path().join("warmed");
    let post = home.path().join("post.html");
    let (a, b) = (upstream.url("/a.jpg"), upstream.url("/b.jpg"));
    let not_warmed = upstream.url("/not-warmed.jpg");
    fs::write(
        &post,
        format!(
            "<p><img src=\"{CORS}{a}\" alt=\"a\"></p>\n<p><img src=\"{CORS}{b}\" width=\"250\"></p>\n\
             <p><img src=\"{CORS}{not_warmed}\"></p>\n"
        ),
    )
    .expect("write post");
    // Warm the two images (not the third) into the cache directory.
    let warm_list = home.path().join("warm.txt");
    fs::write(&warm_list, format!("{a}\n{b}\n")).expect("write list");
    let warm = mirage(
        &["warm", path(&warm_list), "--cache-dir", path(&cache), "--allow-private-networks", "--quiet"],
        home.path(),
    );
    assert_eq!(warm.status.code(), Some(0), "warm: {}", stderr(&warm));

    let cached = tree(&cache);
    let output = rewrite(&["--in-place", "--widths", "320,640", "--cache-dir", path(&cache), path(&post)], home.path());
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let sized = |target: &str, width: u32| format!("{BASE}/width={width},format=auto/?{target}");
    assert_eq!(
        fs::read_to_string(&post).expect("read post"),
        format!(
            "<p><img src=\"{}\" alt=\"a\" srcset=\"{} 320w, {} 500w\" sizes=\"100vw\" width=\"500\" height=\"355\" \
             loading=\"lazy\" decoding=\"async\"></p>\n\
             <p><img src=\"{}\" width=\"250\" srcset=\"{} 320w, {} 500w\" sizes=\"100vw\" loading=\"lazy\" \
             decoding=\"async\"></p>\n\
             <p><img src=\"{}\" srcset=\"{} 320w, {} 640w\" sizes=\"100vw\" loading=\"lazy\" decoding=\"async\"></p>\n",
            sized(&a, 500),
            sized(&a, 320),
            sized(&a, 500),
            sized(&b, 500),
            sized(&b, 320),
            sized(&b, 500),
            sized(&not_warmed, 640),
            sized(&not_warmed, 320),
            sized(&not_warmed, 640),
        )
    );
    // Read-only: the cache directory is as warm left it, and nothing was fetched for the third image.
    assert_eq!(tree(&cache), cached);
    assert_eq!(upstream.hits("/not-warmed.jpg"), 0);
    // The default cache directory (empty here) gives no sizes: the same post rewritten from scratch has none.
    let plain = home.path().join("plain.html");
    fs::write(&plain, format!("<img src=\"{CORS}{a}\">\n")).expect("write");
    let output = rewrite(&["--in-place", path(&plain)], home.path());
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(!fs::read_to_string(&plain).expect("read").contains("width=\"500\""));
}

#[test]
fn hotlinks_move_by_default_and_svg_never() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("blog");
    copy_inputs(&dir);
    let out = home.path().join("out");
    let file = dir.join("posts/2022/markdown.md");

    let entities = dir.join("posts/entities.html");
    let output = mirage(
        &["rewrite", "--base", BASE, "--proxy-prefix", OLD_PROXY, "--out", path(&out), path(&file), path(&entities)],
        home.path(),
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "mirage rewrite: 2 files, 2 changed, 17 URLs rewritten, 0 failed\n  from cors.zfour.workers.dev/?: 12\n  from \
         hotlink: 3\n  from old-proxy.example.net/fetch?url=: 2\n  left alone: 1 already Mirage, 1 data:, 2 relative, \
         1 svg\n"
    );
    // File inputs keep their names below --out.
    let markdown = fs::read_to_string(out.join("markdown.md")).expect("written under its name");
    assert!(markdown.contains(&format!("  - {BASE}/?https://pics.example.org/p2.jpg\n")), "{markdown}");
    assert!(markdown.contains(&format!("![hotlink]({BASE}/?https://cdn.example.net/m3.jpg)")), "{markdown}");
    let html = fs::read_to_string(out.join("entities.html")).expect("written under its name");
    assert!(html.contains(&format!("<img src=\"{BASE}/width=1280,format=auto/?https://cdn.example.net/hotlink.jpg\"")));
    assert!(html.contains(&format!("<img src=\"{CORS}https://shields.example/badge.svg\" alt=\"SVG: stays\">")));
    // With --keep-hotlinks the same files keep their hotlinks (the golden files show it), and the links that are
    // not images stay in both runs.
    assert!(markdown.contains(&format!("[link to a picture]({CORS}https://pics.example.org/link.jpg)")));
}

/// `--in-place` on a symlink rewrites the file it points at and leaves the link a link.
#[cfg(unix)]
#[test]
fn in_place_keeps_a_symlink_a_link() {
    let home = tempfile::tempdir().expect("tempdir");
    let real = home.path().join("real.md");
    fs::write(&real, format!("![a]({CORS}https://pics.example.org/a.jpg)\n")).expect("write");
    let link = home.path().join("link.md");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");

    let output = rewrite(&["--in-place", path(&link)], home.path());
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(fs::symlink_metadata(&link).expect("link").file_type().is_symlink(), "still a link");
    assert_eq!(fs::read_to_string(&real).expect("read"), format!("![a]({BASE}/?https://pics.example.org/a.jpg)\n"));
    // Nothing was left beside either of them.
    let names: Vec<String> = fs::read_dir(home.path())
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|name| !name.contains("mirage-rewrite")), "{names:?}");
}
