//! `mirage urls` over the fixture articles in `tests/fixtures/articles/`: the exact URL list of every source
//! (front matter, HTML, markdown, plain lists), the dropped counts, JSON lines, directories, `--ext`,
//! `--proxy-prefix`, stdin and unreadable inputs.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const SEED_1: &str = "http://static.1sapp.com/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";
const SEED_2: &str = "http://static.1sapp.com/qupost/img/2022/02/28/47f22ebc600e15762d1bcd38cedd334b.jpeg";
const SEED_FILE: &str = "000_daf4203bc5345fd9.txt";

const FRONT_MATTER: [&str; 9] = [
    "https://img.example.com/fm/head.jpg",
    "https://img.example.com/fm/thumb.png",
    "https://img.example.com/fm/cover",
    "https://img.example.com/fm/share.gif",
    "https://img.example.com/fm/origin",
    "https://img.example.com/fm/photo-1.jpg",
    "https://img.example.com/fm/photo-2.jpg",
    "https://img.example.com/fm/g1.jpg",
    "https://img.example.com/fm/g2.jpg",
];

const HTML: [&str; 13] = [
    "https://img.example.com/html/og.jpg",
    "https://img.example.com/html/plain.jpg",
    "https://img.example.com/html/s-320.jpg",
    "https://img.example.com/html/s-640.jpg",
    "https://img.example.com/html/s,comma.jpg",
    "https://img.example.com/html/lazy.jpg",
    "https://img.example.com/html/original.png",
    "https://img.example.com/html/ds.png",
    "https://img.example.com/html/pic.webp",
    "https://img.example.com/html/pic@2x.webp",
    "https://img.example.com/html/pic-wide.jpg",
    "https://img.example.com/html/pic.jpg",
    "https://img.example.com/html/q.jpg?w=1&h=2",
];

const MARKDOWN: [&str; 10] = [
    "https://img.example.com/md/station.jpg",
    "https://img.example.com/md/map.png",
    "https://img.example.com/md/logo.svg",
    "http://img.example.com/md/q.jpg?x=1&y=2",
    "https://img.example.com/md/encoded.png?v=3&s=4",
    "https://img.example.com/md/%E5%9B%BE%E7%89%87/%E8%AD%A6%E5%AF%9F.jpg",
    "https://img.example.com/md/inline.gif",
    "https://img.example.com/md/amp.jpg?a=1&b=2",
    "https://img.example.com/md/figure.jpg?a=1&b=2",
    SEED_1,
];

const LIST: [&str; 3] = [
    "https://img.example.com/list/one.jpg",
    "https://img.example.com/list/two.jpg",
    "http://img.example.com/list/three.gif",
];

const DROPS_SUMMARY: &str = "dropped 7 candidates: 1 data:, 1 ftp:, 1 javascript:, 1 protocol-relative, 3 relative\n";

fn articles() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/articles")
}

/// Runs `mirage urls ARGS` in the fixture directory (so reported file names are relative to it).
fn urls(args: &[&str]) -> Output {
    urls_with_stdin(args, None)
}

fn urls_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .arg("urls")
        .args(args)
        .current_dir(articles())
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mirage");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("mirage output")
}

/// Stdout lines of a successful run with nothing on stderr.
fn lines_ok(output: &Output) -> Vec<String> {
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout").lines().map(str::to_owned).collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `(file, line, url, proxied)` of every JSON line.
fn json_lines(output: &Output) -> Vec<(String, u64, String, bool)> {
    lines_ok(output)
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let object = value.as_object().expect("an object");
            assert_eq!(object.len(), 4, "exactly file, line, url, proxied: {line}");
            (
                object["file"].as_str().expect("file").to_owned(),
                object["line"].as_u64().expect("line"),
                object["url"].as_str().expect("url").to_owned(),
                object["proxied"].as_bool().expect("proxied"),
            )
        })
        .collect()
}

fn row(file: &str, line: u64, url: &str, proxied: bool) -> (String, u64, String, bool) {
    (file.to_owned(), line, url.to_owned(), proxied)
}

#[test]
fn seed_article_yields_its_two_images_both_proxied() {
    let output = urls(&[SEED_FILE]);
    assert_eq!(lines_ok(&output), [SEED_1, SEED_2]);
    assert_eq!(stderr(&output), "");
    // The first image is first seen in `headimg` (line 8: the file starts with a blank line), the second in
    // the body's one long HTML line.
    let output = urls(&["--json", SEED_FILE]);
    assert_eq!(json_lines(&output), [row(SEED_FILE, 8, SEED_1, true), row(SEED_FILE, 16, SEED_2, true)]);
}

#[test]
fn front_matter_values_by_key_and_by_look() {
    let output = urls(&["--json", "blog/front-matter.md"]);
    let file = "blog/front-matter.md";
    let expected = [
        row(file, 4, FRONT_MATTER[0], true),
        row(file, 5, FRONT_MATTER[1], false),
        row(file, 6, FRONT_MATTER[2], false),
        row(file, 9, FRONT_MATTER[3], false),
        row(file, 10, FRONT_MATTER[4], true),
        row(file, 12, FRONT_MATTER[5], false),
        row(file, 13, FRONT_MATTER[6], false),
        row(file, 15, FRONT_MATTER[7], false),
        row(file, 15, FRONT_MATTER[8], false),
    ];
    assert_eq!(json_lines(&output), expected);
    assert_eq!(stderr(&output), "", "a `link:` to a web page is not a dropped candidate");
}

#[test]
fn html_img_srcset_lazy_attributes_and_picture_sources() {
    let output = urls(&["--json", "blog/posts/html-body.html"]);
    let file = "blog/posts/html-body.html";
    let lines = [4, 8, 10, 11, 12, 15, 16, 16, 18, 18, 19, 20, 22];
    let proxied = |url: &str| url.ends_with("pic-wide.jpg") || url.contains("q.jpg");
    let expected: Vec<_> = HTML.iter().zip(lines).map(|(url, line)| row(file, line, url, proxied(url))).collect();
    assert_eq!(json_lines(&output), expected);
    assert_eq!(stderr(&output), "dropped 1 candidate: 1 data:\n", "the lazy-loading placeholder");
}

#[test]
fn markdown_inline_reference_inline_html_and_html_blocks() {
    let output = urls(&["--json", "blog/posts/2022/markdown.md"]);
    let file = "blog/posts/2022/markdown.md";
    // Reference-style images are reported on the line of their definition, where the URL is written.
    let lines = [9, 39, 40, 13, 16, 18, 21, 22, 25, 31];
    let proxied = |url: &str| url.contains("q.jpg") || url.contains("encoded.png");
    let expected: Vec<_> = MARKDOWN.iter().zip(lines).map(|(url, line)| row(file, line, url, proxied(url))).collect();
    assert_eq!(json_lines(&output), expected);
    assert_eq!(stderr(&output), "");
}

#[test]
fn plain_list_keeps_first_of_duplicates() {
    let output = urls(&["--json", "blog/list.txt"]);
    let file = "blog/list.txt";
    let expected = [row(file, 1, LIST[0], false), row(file, 2, LIST[1], true), row(file, 5, LIST[2], false)];
    assert_eq!(json_lines(&output), expected);
}

#[test]
fn unfetchable_candidates_are_dropped_and_counted() {
    let output = urls(&["blog/drops.md"]);
    assert_eq!(lines_ok(&output), ["https://img.example.com/drops/kept.jpg"]);
    assert_eq!(stderr(&output), DROPS_SUMMARY);
}

#[test]
fn post_without_images_prints_nothing() {
    let output = urls(&["no-images.md"]);
    assert_eq!(lines_ok(&output), Vec::<String>::new());
    assert_eq!(stderr(&output), "");
}

#[test]
fn directory_is_recursed_in_sorted_order_and_duplicates_are_dropped() {
    let output = urls(&["blog"]);
    // drops.md, front-matter.md, list.txt, posts/2022/markdown.md, posts/html-body.html; post.mdx (extension)
    // and .cache/ (hidden) are not read.
    let expected: Vec<&str> = ["https://img.example.com/drops/kept.jpg"]
        .into_iter()
        .chain(FRONT_MATTER)
        .chain(LIST)
        .chain(MARKDOWN)
        .chain(HTML)
        .collect();
    assert_eq!(lines_ok(&output), expected);
    assert_eq!(
        stderr(&output),
        "dropped 8 candidates: 2 data:, 1 ftp:, 1 javascript:, 1 protocol-relative, 3 relative\n"
    );
}

#[test]
fn duplicates_across_files_keep_the_first_place_seen() {
    let output = urls(&["--json", SEED_FILE, "blog/posts/2022/markdown.md"]);
    let rows = json_lines(&output);
    assert_eq!(rows.len(), 2 + MARKDOWN.len() - 1);
    assert_eq!(rows[0], row(SEED_FILE, 8, SEED_1, true));
    assert_eq!(rows.iter().filter(|(_, _, url, _)| url == SEED_1).count(), 1);
    let found: Vec<&str> = rows.iter().map(|(_, _, url, _)| url.as_str()).collect();
    let expected: Vec<&str> = [SEED_1, SEED_2].into_iter().chain(MARKDOWN[..9].iter().copied()).collect();
    assert_eq!(found, expected);
    // The same file twice adds nothing.
    assert_eq!(lines_ok(&urls(&[SEED_FILE, SEED_FILE])), [SEED_1, SEED_2]);
}

#[test]
fn ext_changes_the_extensions_read_from_directories() {
    let output = urls(&["--ext", "mdx", "blog"]);
    assert_eq!(lines_ok(&output), ["https://img.example.com/mdx/only.png"]);
    let output = urls(&["--ext", "TXT,html", "blog"]);
    let expected: Vec<&str> = LIST.into_iter().chain(HTML).collect();
    assert_eq!(lines_ok(&output), expected);
}

#[test]
fn proxy_prefix_adds_a_prefix_to_strip() {
    let output = urls(&["custom-prefix.md"]);
    assert_eq!(
        lines_ok(&output),
        [
            "https://img.example.org/mirror/?https://img.example.com/custom/c.jpg",
            "https://img.example.org/mirror/?https%3A%2F%2Fimg.example.com%2Fcustom%2Fd.jpg"
        ]
    );
    let output = urls(&["--json", "--proxy-prefix", "https://img.example.org/mirror/?", "custom-prefix.md"]);
    let file = "custom-prefix.md";
    assert_eq!(
        json_lines(&output),
        [
            row(file, 1, "https://img.example.com/custom/c.jpg", true),
            row(file, 2, "https://img.example.com/custom/d.jpg", true)
        ]
    );
}

#[test]
fn stdin_is_read_and_sniffed_by_content() {
    let seed = std::fs::read(articles().join(SEED_FILE)).expect("seed");
    let output = urls_with_stdin(&["--json", "-"], Some(&seed));
    assert_eq!(json_lines(&output), [row("-", 8, SEED_1, true), row("-", 16, SEED_2, true)]);
    let list = b"https://img.example.com/list/one.jpg\n/relative.jpg\n";
    let output = urls_with_stdin(&["-"], Some(list));
    assert_eq!(lines_ok(&output), ["https://img.example.com/list/one.jpg"]);
    assert_eq!(stderr(&output), "dropped 1 candidate: 1 relative\n");
}

#[test]
fn unreadable_input_exits_2_naming_it() {
    let output = urls(&[SEED_FILE, "does-not-exist.md"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("does-not-exist.md"), "{message}");
    assert!(message.starts_with("mirage urls: cannot read"), "{message}");
}
