//! Rewrites of in-memory texts: what changes, what stays byte for byte, and what a second run does.

use super::*;

const CORS: &str = "https://cors.zfour.workers.dev/?";

fn rewriter(hotlinks: bool) -> Rewriter {
    Rewriter::new(RewriteOptions {
        base: Base::parse("https://img.example.com/").expect("base"),
        widths: vec![320, 640],
        hotlinks,
        proxy_prefixes: vec!["https://old-proxy.example.net/fetch?u=".into()],
    })
}

fn no_size(_: &Target) -> Option<(u32, u32)> {
    None
}

/// The rewritten text, checking that a second run changes nothing.
fn rewrite(text: &str, extension: &str) -> (String, Outcome) {
    let rewriter = rewriter(false);
    let outcome = rewriter.rewrite(text, Some(extension), &no_size);
    let again = rewriter.rewrite(&outcome.text, Some(extension), &no_size);
    assert_eq!(again.text, outcome.text, "a second run changes nothing");
    assert_eq!(again.rewritten_count(), 0);
    (outcome.text.clone(), outcome)
}

#[test]
fn base_is_checked_and_loses_its_slash() {
    assert_eq!(Base::parse("https://img.example.com/").expect("base").as_str(), "https://img.example.com");
    assert_eq!(Base::parse("http://h:8080/img/").expect("base").as_str(), "http://h:8080/img");
    assert!(Base::parse("img.example.com").is_err());
    assert!(Base::parse("ftp://h/").is_err());
    assert!(Base::parse("https://h/?x").is_err());
    assert_eq!(parse_widths(&[640, 320, 640]), Ok(vec![320, 640]));
    assert!(parse_widths(&[]).is_err());
    assert!(parse_widths(&[0]).is_err());
    assert!(parse_widths(&[8193]).is_err());
}

#[test]
fn classification() {
    let r = rewriter(false);
    let rewrite = |target: &str, source: &str| Verdict::Rewrite {
        target: Target::parse(target).expect("target"),
        source: source.to_owned(),
    };
    assert_eq!(r.classify(&format!("{CORS}http://h/a.jpg")), rewrite("http://h/a.jpg", "cors.zfour.workers.dev/?"));
    assert_eq!(
        r.classify("//old-proxy.example.net/fetch?u=http%3A%2F%2Fh%2Fa.jpg"),
        rewrite("http://h/a.jpg", "old-proxy.example.net/fetch?u=")
    );
    // The CORS form on any host is read by `target_of_any_spelling`.
    assert_eq!(r.classify("https://other.example/?http://h/a.jpg"), rewrite("http://h/a.jpg", "other.example"));
    assert_eq!(r.classify("https://img.example.com/?http://h/a.jpg"), Verdict::Leave("already Mirage"));
    assert_eq!(r.classify("HTTPS://IMG.example.com/width=1,format=auto/?x"), Verdict::Leave("already Mirage"));
    assert_eq!(r.classify("https://img.example.com.evil/a.jpg"), Verdict::Leave("hotlink"));
    assert_eq!(r.classify("https://h/a.jpg"), Verdict::Leave("hotlink"));
    assert_eq!(rewriter(true).classify("https://h/a.jpg"), rewrite("https://h/a.jpg", "hotlink"));
    assert_eq!(rewriter(true).classify("https://h/logo.SVG"), Verdict::Leave("svg"));
    assert_eq!(r.classify(&format!("{CORS}https://h/badge.svg")), Verdict::Leave("svg"));
    assert_eq!(r.classify("/img/a.jpg"), Verdict::Leave("relative"));
    assert_eq!(r.classify("a.jpg"), Verdict::Leave("relative"));
    assert_eq!(r.classify("data:image/png;base64,AA"), Verdict::Leave("data:"));
    assert_eq!(r.classify("//h/a.jpg"), Verdict::Leave("protocol-relative"));
    assert_eq!(r.classify(&format!("{CORS}/img/a.jpg")), Verdict::Leave("malformed"));
}

/// Every dialect Mirage's server reads moves to `{base}/?{target}`, named by its host in the summary.
#[test]
fn dialect_urls_are_rewritten_to_their_targets() {
    let r = rewriter(false);
    let moves_to = |target: &str, source: &str| Verdict::Rewrite {
        target: Target::parse(target).expect("target"),
        source: source.to_owned(),
    };
    let base64 = "aHR0cHM6Ly9oLmV4YW1wbGUvYS5qcGc"; // base64url of https://h.example/a.jpg
    let cases = [
        ("https://images.weserv.nl/?url=https://h/a.jpg&w=300", "https://h/a.jpg", "images.weserv.nl"),
        ("https://wsrv.nl/?url=h/a.jpg", "http://h/a.jpg", "wsrv.nl"),
        ("https://wsrv.nl/?url=ssl:h/a.jpg&w=300&h=200&fit=cover", "https://h/a.jpg", "wsrv.nl"),
        (
            "https://blog.example/cdn-cgi/image/width=300,format=auto/https://h.example/a.jpg",
            "https://h.example/a.jpg",
            "blog.example",
        ),
        (
            "https://ip.example/insecure/rs:fit:300:0/plain/https://h.example/a.jpg",
            "https://h.example/a.jpg",
            "ip.example",
        ),
        (&format!("https://ip.example/insecure/rs:fit:300:0/{base64}.jpg"), "https://h.example/a.jpg", "ip.example"),
        ("https://th.example/unsafe/300x0/https://h.example/a.jpg", "https://h.example/a.jpg", "th.example"),
        (
            "https://th.example/unsafe/fit-in/300x200/filters:quality(80)/h.example/a.jpg",
            "http://h.example/a.jpg",
            "th.example",
        ),
    ];
    for (url, target, source) in cases {
        assert_eq!(r.classify(url), moves_to(target, source), "{url}");
    }
    // An ordinary link that merely looks like a dialect (thumbor's `unsafe/` before a single-label "host") is a
    // hotlink, not a proxy URL.
    assert_eq!(r.classify("https://cdn.example/unsafe/photos/a.jpg"), Verdict::Leave("hotlink"));
    // A relative Cloudflare path names the site's own image: left alone like any relative URL.
    assert_eq!(r.classify("/cdn-cgi/image/width=300/https://h/a.jpg"), Verdict::Leave("relative"));
    let text = "![a](https://images.weserv.nl/?url=h/a.jpg&w=300)\n\n<img src=\"https://th.example/unsafe/300x0/h.example/b.jpg\">\n";
    let (out, outcome) = rewrite(text, "md");
    assert!(out.starts_with("![a](https://img.example.com/?http://h/a.jpg)\n"), "{out}");
    assert!(out.contains("src=\"https://img.example.com/width=640,format=auto/?http://h.example/b.jpg\""), "{out}");
    assert_eq!(outcome.rewritten_count(), 2);
}

#[test]
fn front_matter_keeps_quotes_and_layout() {
    let text = format!(
        "---\r\ntitle: '手相牵: b'\r\nheadimg: '{CORS}http://h/1.jpg'\r\ncover: \"{CORS}http://h/2.jpg\"\r\nthumbnail:   \
         {CORS}http://h/3.jpg   # the card\r\nphotos:\r\n  - {CORS}http://h/4.jpg\r\nlink: https://h/page\r\n---\r\nbody\r\n"
    );
    let (out, outcome) = rewrite(&text, "md");
    assert_eq!(
        out,
        "---\r\ntitle: '手相牵: b'\r\nheadimg: 'https://img.example.com/?http://h/1.jpg'\r\ncover: \
         \"https://img.example.com/?http://h/2.jpg\"\r\nthumbnail:   https://img.example.com/?http://h/3.jpg   # the \
         card\r\nphotos:\r\n  - https://img.example.com/?http://h/4.jpg\r\nlink: https://h/page\r\n---\r\nbody\r\n"
    );
    assert_eq!(outcome.rewritten, BTreeMap::from([("cors.zfour.workers.dev/?".to_owned(), 4)]));
}

#[test]
fn front_matter_that_is_not_yaml_is_rewritten_by_lines() {
    let text = format!("---\ntitle: 'it's'\ncover: {CORS}http://h/c.jpg\n---\nbody\n");
    let (out, _) = rewrite(&text, "md");
    assert_eq!(out, "---\ntitle: 'it's'\ncover: https://img.example.com/?http://h/c.jpg\n---\nbody\n");
}

#[test]
fn markdown_destinations_in_place() {
    let text = format!(
        "# T\n\n![a]({CORS}http://h/a.jpg \"t\") and ![b](<{CORS}http://h/b c.jpg>)\n![c][r] [link]({CORS}http://h/p.jpg)\n\n\
         [r]: {CORS}http://h/c_(1).jpg?x=1&amp;y=2\n\n    ![code]({CORS}http://h/code.jpg)\n"
    );
    let (out, outcome) = rewrite(&text, "md");
    assert_eq!(
        out,
        format!(
            "# T\n\n![a](https://img.example.com/?http://h/a.jpg \"t\") and ![b](<https://img.example.com/?http://h/b%20c.jpg>)\n\
             ![c][r] [link]({CORS}http://h/p.jpg)\n\n[r]: https://img.example.com/?http://h/c_\\(1\\).jpg?x=1&y=2\n\n    \
             ![code]({CORS}http://h/code.jpg)\n"
        )
    );
    assert_eq!(outcome.rewritten_count(), 3);
}

#[test]
fn img_gets_the_responsive_set_in_its_own_quotes() {
    let text = format!(
        "<p><img alt='x' src='{CORS}http://h/a.jpg?x=1&amp;y=2' /></p>\n<img src={CORS}http://h/b.jpg sizes=\"50vw\" \
         loading=eager>\n"
    );
    let (out, _) = rewrite(&text, "html");
    assert_eq!(
        out,
        "<p><img alt='x' src='https://img.example.com/width=640,format=auto/?http://h/a.jpg?x=1&amp;y=2' \
         srcset='https://img.example.com/width=320,format=auto/?http://h/a.jpg?x=1&amp;y=2 320w, \
         https://img.example.com/width=640,format=auto/?http://h/a.jpg?x=1&amp;y=2 640w' sizes='100vw' \
         loading='lazy' decoding='async' /></p>\n<img src=\"https://img.example.com/width=640,format=auto/?http://h/b.jpg\" \
         sizes=\"50vw\" loading=eager srcset=\"https://img.example.com/width=320,format=auto/?http://h/b.jpg 320w, \
         https://img.example.com/width=640,format=auto/?http://h/b.jpg 640w\" decoding=\"async\">\n"
    );
}

#[test]
fn img_width_and_height_from_the_original() {
    let text = format!("<img src=\"{CORS}http://h/a.jpg\">\n<img src=\"{CORS}http://h/a.jpg\" width=\"100\">\n");
    let size = |target: &Target| (target.canonical() == "http://h/a.jpg").then_some((500, 355));
    let out = rewriter(false).rewrite(&text, Some("html"), &size).text;
    assert_eq!(
        out,
        "<img src=\"https://img.example.com/width=500,format=auto/?http://h/a.jpg\" \
         srcset=\"https://img.example.com/width=320,format=auto/?http://h/a.jpg 320w, \
         https://img.example.com/width=500,format=auto/?http://h/a.jpg 500w\" sizes=\"100vw\" width=\"500\" \
         height=\"355\" loading=\"lazy\" decoding=\"async\">\n\
         <img src=\"https://img.example.com/width=500,format=auto/?http://h/a.jpg\" width=\"100\" \
         srcset=\"https://img.example.com/width=320,format=auto/?http://h/a.jpg 320w, \
         https://img.example.com/width=500,format=auto/?http://h/a.jpg 500w\" sizes=\"100vw\" loading=\"lazy\" \
         decoding=\"async\">\n"
    );
}

#[test]
fn other_image_attributes_become_mirrors() {
    let text = format!(
        "<img src=\"data:image/gif;base64,R0lG\" data-src=\"{CORS}http://h/a.jpg\">\
         <img src=\"{CORS}http://h/b.jpg\" srcset=\"{CORS}http://h/b.jpg 1x, /b@2x.jpg 2x\">\
         <picture><source srcset=\"{CORS}http://h/c.webp\"></picture><video poster=\"{CORS}http://h/p.jpg\"></video>\
         <meta property=\"og:image\" content=\"{CORS}http://h/og.jpg\">\n"
    );
    let (out, outcome) = rewrite(&text, "html");
    let m = "https://img.example.com/?";
    assert_eq!(
        out,
        format!(
            "<img src=\"data:image/gif;base64,R0lG\" data-src=\"{m}http://h/a.jpg\"><img src=\"{m}http://h/b.jpg\" \
             srcset=\"{m}http://h/b.jpg 1x, /b@2x.jpg 2x\"><picture><source srcset=\"{m}http://h/c.webp\"></picture>\
             <video poster=\"{m}http://h/p.jpg\"></video><meta property=\"og:image\" content=\"{m}http://h/og.jpg\">\n"
        )
    );
    assert_eq!(outcome.rewritten_count(), 6);
    assert_eq!(outcome.left, BTreeMap::from([("data:".to_owned(), 1), ("relative".to_owned(), 1)]));
}

#[test]
fn html_in_markdown_and_a_byte_order_mark() {
    let text = format!(
        "\u{feff}Text <img src=\"{CORS}http://h/a.jpg\"> more\n\n<div>\n<img\n  src=\"{CORS}http://h/b.jpg\"\n>\n</div>\n"
    );
    let (out, outcome) = rewrite(&text, "md");
    assert!(out.starts_with(
        "\u{feff}Text <img src=\"https://img.example.com/width=640,format=auto/?http://h/a.jpg\" srcset="
    ));
    assert!(out.contains("<img\n  src=\"https://img.example.com/width=640,format=auto/?http://h/b.jpg\" srcset=\""));
    assert!(out.ends_with(" decoding=\"async\"\n>\n</div>\n"));
    assert_eq!(outcome.rewritten_count(), 2);
}

#[test]
fn hotlinks_only_when_asked() {
    let text = "![a](https://h/a.jpg)\n";
    assert_eq!(rewriter(false).rewrite(text, Some("md"), &no_size).text, text);
    assert_eq!(
        rewriter(true).rewrite(text, Some("md"), &no_size).text,
        "![a](https://img.example.com/?https://h/a.jpg)\n"
    );
}

#[test]
fn markdown_escapes_read_back_as_the_url() {
    assert_eq!(markdown_escape("http://h/a_(1).jpg?a=1&amp;b", false), "http://h/a_\\(1\\).jpg?a=1\\&amp;b");
    assert_eq!(markdown_escape("http://h/(1).jpg?a&b", true), "http://h/(1).jpg?a&b");
    assert_eq!(yaml_escape("http://h/it's", Some('\'')), "http://h/it''s");
    assert_eq!(yaml_escape("http://h/\"", Some('"')), "http://h/\\\"");
}

proptest::proptest! {
    /// Whatever an article holds, rewriting never panics, only touches bytes that hold URLs, and is idempotent.
    #[test]
    fn any_text_rewrites_idempotently(
        text in concat!(
            "(---\n|\r?\n|<img |<source |srcset=\"|src=|data-src=|'|\"|!\\[|\\]\\(|\\]\\[|\\[r\\]: |cover: |- |, | 2x|",
            "&amp;|https://cors.zfour.workers.dev/\\?|http://h/|%3A%2F|图|a.jpg|>|\\)| |`){0,40}",
        ),
        extension in proptest::option::of("(md|html|txt)"),
    ) {
        let rewriter = rewriter(true);
        let once = rewriter.rewrite(&text, extension.as_deref(), &no_size);
        let twice = rewriter.rewrite(&once.text, extension.as_deref(), &no_size);
        proptest::prop_assert_eq!(&twice.text, &once.text);
    }
}
