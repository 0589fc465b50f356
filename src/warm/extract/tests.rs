//! Extraction of in-memory texts: what each source yields, on which line, and what is dropped.

use super::*;

/// `(line, url, proxied)` of one URL found.
type Found = (usize, String, bool);

/// `(line, url, proxied)` of every URL found in `text`, and the dropped counts.
fn scan(text: &str, extension: Option<&str>) -> (Vec<Found>, Vec<(String, usize)>) {
    let mut collected = Collected::default();
    scan_text(text, "t", extension, &Normaliser::new(&[]), &mut collected);
    let urls = collected.extraction.urls.into_iter().map(|found| (found.line, found.url, found.proxied)).collect();
    (urls, collected.extraction.dropped.into_iter().collect())
}

fn found(line: usize, url: &str, proxied: bool) -> Found {
    (line, url.to_owned(), proxied)
}

#[test]
fn front_matter_then_markdown_body() {
    let text = "\n---\ntitle: 'a: b'\nheadimg: 'https://cors.zfour.workers.dev/?http://h/1.jpg'\nlink: https://h/post\n\
                ---\n\nText ![one](http://h/2.png \"title\") and\n![two][ref]\n\n[ref]: <http://h/3.gif>\n";
    let (urls, dropped) = scan(text, Some("txt"));
    assert_eq!(
        urls,
        [found(4, "http://h/1.jpg", true), found(8, "http://h/2.png", false), found(11, "http://h/3.gif", false)]
    );
    assert!(dropped.is_empty());
}

/// Image-service URLs in the dialects the server reads name their targets, as `mirage rewrite` reads them, so that
/// `mirage urls` lists the same images before and after a rewrite.
#[test]
fn dialect_urls_name_their_targets() {
    let text = "![w](https://images.weserv.nl/?url=h/1.jpg&w=300)\n![c](https://b.example/cdn-cgi/image/width=300/https://h.example/2.jpg)\n\
                ![i](https://ip.example/insecure/rs:fit:300:0/plain/https://h.example/3.jpg)\n\
                ![t](https://th.example/unsafe/300x0/h.example/4.jpg)\n![own](https://h.example/dir/?a=b)\n\
                ![not thumbor](https://cdn.example/unsafe/photos/5.jpg)\n";
    let (urls, dropped) = scan(text, Some("md"));
    assert_eq!(
        urls,
        [
            found(1, "http://h/1.jpg", true),
            found(2, "https://h.example/2.jpg", true),
            found(3, "https://h.example/3.jpg", true),
            found(4, "http://h.example/4.jpg", true),
            found(5, "https://h.example/dir/?a=b", false),
            found(6, "https://cdn.example/unsafe/photos/5.jpg", false),
        ]
    );
    assert!(dropped.is_empty());
}

#[test]
fn html_in_markdown_keeps_lines_after_wide_characters() {
    let text = "段落一\n\n<div>\n<p>中文</p><img\n  src=\"https://h/a.jpg\">\n</div>\n\n\
                中文 <img src=\"https://h/b.jpg\"> 中文\n";
    let (urls, _) = scan(text, Some("md"));
    assert_eq!(urls, [found(5, "https://h/a.jpg", false), found(8, "https://h/b.jpg", false)]);
}

#[test]
fn srcset_candidates_get_their_own_lines() {
    let text = "<img srcset=\"https://h/a.jpg 1x,\n  https://h/b.jpg 2x\" src=\"https://h/a.jpg\">";
    let (urls, _) = scan(text, Some("html"));
    assert_eq!(urls, [found(1, "https://h/a.jpg", false), found(2, "https://h/b.jpg", false)]);
}

#[test]
fn code_is_not_an_image() {
    let text =
        "```\n![x](http://h/code.png)\n<img src=\"http://h/code2.png\">\n```\n\n`<img src=\"http://h/c.png\">`\n";
    assert_eq!(scan(text, Some("md")), (vec![], vec![]));
}

#[test]
fn script_text_is_not_markup() {
    let text = "<!DOCTYPE html><script>var s = '<img src=\"http://h/no.png\">';</script><img src=\"http://h/yes.png\">";
    assert_eq!(scan(text, None).0, [found(1, "http://h/yes.png", false)]);
}

#[test]
fn markdown_destinations_are_unescaped() {
    let (urls, _) = scan("![a](http://h/a.jpg?x=1&amp;y=2) ![b](http://h/b\\_c.jpg)\n", Some("md"));
    assert_eq!(urls, [found(1, "http://h/a.jpg?x=1&y=2", false), found(1, "http://h/b_c.jpg", false)]);
}

#[test]
fn links_are_not_images() {
    assert_eq!(scan("[page](http://h/a.jpg) <a href=\"http://h/b.jpg\">b</a>\n", Some("md")), (vec![], vec![]));
}

#[test]
fn meta_og_image_and_video_poster() {
    let text = "<html><meta property=\"og:image\" content=\"http://h/og.jpg\"><meta name=\"description\" \
                content=\"http://h/not.jpg\"><video poster=\"http://h/p.jpg\" src=\"http://h/v.mp4\"></video>";
    let (urls, _) = scan(text, None);
    assert_eq!(urls, [found(1, "http://h/og.jpg", false), found(1, "http://h/p.jpg", false)]);
}

#[test]
fn plain_list_is_sniffed_by_content() {
    let text = "https://h/a.jpg\n\n  data:image/png;base64,AA\nftp://h/b.jpg\nhttps://h/a.jpg\n";
    let (urls, dropped) = scan(text, Some("md"));
    assert_eq!(urls, [found(1, "https://h/a.jpg", false)]);
    assert_eq!(dropped, [("data:".to_owned(), 1), ("ftp:".to_owned(), 1)]);
    // One word that is not a URL makes it an article.
    assert_eq!(scan("https://h/a.jpg\nhello\n", Some("md")).0, []);
}

#[test]
fn invalid_yaml_front_matter_falls_back_to_lines() {
    let text = "---\ntitle: 'it's'\ncover: https://h/c.jpg\n---\nbody\n";
    assert_eq!(scan(text, Some("md")).0, [found(3, "https://h/c.jpg", false)]);
}

#[test]
fn front_matter_image_keys_count_relative_values() {
    let text = "---\ncover: /img/c.jpg\nthumbnail: false\nicon: ''\npermalink: /a/b/\nsource: http://h/page\n---\n";
    assert_eq!(scan(text, Some("md")), (vec![], vec![("relative".to_owned(), 1)]));
}

#[test]
fn line_index() {
    let lines = LineIndex::new("a\nbc\n\nd");
    assert_eq!([0, 1, 2, 3, 4, 5, 6, 99].map(|offset| lines.line(offset)), [1, 1, 2, 2, 2, 3, 4, 4]);
}

#[test]
fn crlf_line_endings_keep_line_numbers() {
    let html = "<p>a</p>\r\n\r\n<img src=\"http://h/1.jpg\">\r\n<img\r\n src=\"http://h/2.jpg\">\r\n";
    assert_eq!(scan(html, Some("html")).0, [found(3, "http://h/1.jpg", false), found(5, "http://h/2.jpg", false)]);
    let markdown = "---\r\ncover: http://h/c.jpg\r\n---\r\n\r\n![a](http://h/m.jpg)\r\n\r\n\
                    <div>\r\n<img src=\"http://h/d.jpg\">\r\n";
    assert_eq!(
        scan(markdown, Some("md")).0,
        [found(2, "http://h/c.jpg", false), found(5, "http://h/m.jpg", false), found(8, "http://h/d.jpg", false)]
    );
}

proptest::proptest! {
    /// Whatever an article holds, extraction never panics and every URL it reports is on a line of the text.
    #[test]
    fn any_text_is_scanned_without_panicking(
        text in concat!(
            "(---\n|\r?\n|<img |<source |srcset=\"|src=|data-src=|'|\"|!\\[|\\]\\(|\\]\\[|\\[r\\]: |cover: |- |, | 2x|",
            "&amp;|https://cors.zfour.workers.dev/\\?|http://h/|%3A%2F|图|a.jpg|>|\\)| |`){0,40}",
        ),
        extension in proptest::option::of("(md|html|txt)"),
    ) {
        let (urls, _) = scan(&text, extension.as_deref());
        let lines = text.split('\n').count();
        for (line, url, _) in urls {
            proptest::prop_assert!((1..=lines).contains(&line), "line {line} of {lines}");
            proptest::prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
        }
    }
}
