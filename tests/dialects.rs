//! URL dialects over real HTTP: weserv, Cloudflare, imgproxy and thumbor URLs give the image their native spelling
//! gives, from the same cache entry (one upstream fetch, `X-Cache: HIT` across spellings, both ways); imgproxy and
//! thumbor signatures computed independently (Python's `hmac`, as their documentation shows) are accepted with
//! their own key and nothing else; dialects turned off are not routes; `--require-signature` refuses unsigned
//! dialect requests; weserv's `default` and `maxage`.

mod common;

use std::process::Command;

use common::{Proxy, Reply, Route, Upstream, client, get, photo};
use mirage::sniff::ImageFormat;

const PHOTO: &str = "/img/photo.jpg";

/// An upstream serving the 500x355 photo at [`PHOTO`].
async fn photo_upstream() -> Upstream {
    let upstream = Upstream::start().await;
    upstream.route(PHOTO, Route::image(photo()));
    upstream
}

/// What most tests start from: a loopback upstream serving the photo, a Mirage server in a fresh directory (with
/// `--origin` the upstream's root when `with_origin`), a client, and the photo's source written with and without a
/// scheme.
struct Setup {
    upstream: Upstream,
    dir: tempfile::TempDir,
    proxy: Proxy,
    client: reqwest::Client,
    host: String,
    source: String,
}

async fn setup(with_origin: bool) -> Setup {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let origin = upstream.url("/");
    let flags: &[&str] = if with_origin { &["--origin", &origin] } else { &[] };
    let proxy = Proxy::local(dir.path(), flags).await;
    let (host, source) = (host_of(&upstream), upstream.url(PHOTO));
    Setup { upstream, dir, proxy, client: client(), host, source }
}

/// The upstream's host and port, as weserv and thumbor write sources without a scheme.
fn host_of(upstream: &Upstream) -> String {
    upstream.url("").trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// A 200 image answer: its format and dimensions.
fn image_of(reply: &Reply, what: &str) -> (ImageFormat, u32, u32) {
    assert_eq!(reply.status, 200, "{what}: {:?}", String::from_utf8_lossy(&reply.body));
    let format = ImageFormat::sniff(&reply.body).unwrap_or_else(|| panic!("{what}: not an image"));
    let decoded = image::load_from_memory(&reply.body).unwrap_or_else(|e| panic!("{what}: does not decode: {e}"));
    (format, decoded.width(), decoded.height())
}

/// Runs Python's `hmac` on `message`: `digest` is `sha256` (imgproxy: key and salt in hex, unpadded base64url of
/// salt + message) or `sha1` (thumbor: plain key, padded urlsafe base64).
fn python_signature(digest: &str, key: &str, salt: &str, message: &str) -> String {
    let script = "import base64, hashlib, hmac, sys\n\
        digest, key, salt, message = sys.argv[1:5]\n\
        if digest == 'sha256':\n\
        \x20   mac = hmac.new(bytes.fromhex(key), bytes.fromhex(salt) + message.encode(), hashlib.sha256)\n\
        \x20   print(base64.urlsafe_b64encode(mac.digest()).rstrip(b'=').decode())\n\
        else:\n\
        \x20   print(base64.urlsafe_b64encode(hmac.new(key.encode(), message.encode(), hashlib.sha1).digest()).decode())\n";
    let output = Command::new("python3")
        .args(["-c", script, digest, key, salt, message])
        .output()
        .expect("python3 runs (the signature tests compute signatures independently with it)");
    assert!(output.status.success(), "python3: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("ASCII").trim().to_owned()
}

/// Unpadded base64url, as imgproxy's URL builders encode sources.
fn base64url(text: &str) -> String {
    mirage::signing::base64url_encode(text.as_bytes())
}

#[tokio::test]
async fn every_dialect_gives_the_size_and_format_it_asks_for() {
    let Setup { upstream, dir: _dir, proxy, client, host, source } = setup(true).await;
    let cases = [
        (format!("/?url={host}{PHOTO}&w=200&output=png"), ImageFormat::Png, (200, 142)),
        (format!("/?url={host}{PHOTO}&w=120&h=120&fit=cover&output=webp"), ImageFormat::Webp, (120, 120)),
        (format!("/cdn-cgi/image/width=100,format=webp{PHOTO}"), ImageFormat::Webp, (100, 71)),
        (format!("/cdn-cgi/image/width=80,height=80,fit=cover/{source}"), ImageFormat::Jpeg, (80, 80)),
        (format!("/insecure/rs:fill:120:90/plain/{source}@png"), ImageFormat::Png, (120, 90)),
        (format!("/insecure/w:250/{}.jpg", base64url(&source)), ImageFormat::Jpeg, (250, 178)),
        (format!("/unsafe/fit-in/150x150/{host}{PHOTO}"), ImageFormat::Jpeg, (150, 107)),
        // thumbor's fit-in never enlarges.
        (format!("/unsafe/fit-in/900x900/{host}{PHOTO}"), ImageFormat::Jpeg, (500, 355)),
        (format!("/unsafe/100x100/filters:format(png)/{host}{PHOTO}"), ImageFormat::Png, (100, 100)),
    ];
    for (path, format, (width, height)) in cases {
        let (got_format, got_width, got_height) = image_of(&get(&client, &proxy.path(&path)).await, &path);
        assert_eq!(got_format, format, "{path}");
        assert_eq!(got_width, width, "{path}");
        assert!(got_height.abs_diff(height) <= 1, "{path}: height {got_height}, expected about {height}");
    }
    assert_eq!(upstream.hits(PHOTO), 1, "one upstream fetch for every dialect and size");
    proxy.stop().await;
}

#[tokio::test]
async fn a_dialect_spelling_and_the_native_one_share_one_cache_entry() {
    let Setup { upstream, dir: _dir, proxy, client, host, source } = setup(true).await;
    // (native spelling, dialect spelling) of one image and size; each pair is a size no other pair asks for.
    let pairs = [
        (format!("/w=210,fit=contain/?{source}"), format!("/?url={host}{PHOTO}&w=210")),
        (format!("/w=220,h=100,fit=crop/?{source}"), format!("/?url={host}{PHOTO}&w=220&h=100&fit=cover&we")),
        (format!("/width=230,format=webp/?{source}"), format!("/cdn-cgi/image/width=230,format=webp{PHOTO}")),
        (format!("/w=240,h=120,fit=crop,f=png/?{source}"), format!("/insecure/rs:fill:240:120/plain/{source}@png")),
        (format!("/w=125,dpr=2/?{source}"), format!("/insecure/w:250/{}", base64url(&source))),
        (format!("/w=260,h=130,fit=cover,g=top-left/?{source}"), format!("/unsafe/260x130/left/top/{host}{PHOTO}")),
    ];
    for (i, (native, dialect)) in pairs.iter().enumerate() {
        // Every other pair starts from the dialect side: sharing works both ways.
        let (first, second) = if i % 2 == 0 { (native, dialect) } else { (dialect, native) };
        let a = get(&client, &proxy.path(first)).await;
        assert_eq!((a.status, a.x_cache()), (200, "MISS"), "{first}: {:?}", String::from_utf8_lossy(&a.body));
        let b = get(&client, &proxy.path(second)).await;
        assert_eq!(b.status, 200, "{second}: {:?}", String::from_utf8_lossy(&b.body));
        assert!(b.x_cache().starts_with("HIT"), "{second} after {first}: X-Cache {}", b.x_cache());
        assert!(a.body == b.body, "{first} and {second} answer the same bytes");
        assert_eq!(a.header("etag"), b.header("etag"));
    }
    assert_eq!(upstream.hits(PHOTO), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn unsupported_parameters_are_400_naming_them() {
    let Setup { upstream, dir: _dir, proxy, client, host, source } = setup(false).await;
    let cases = [
        (format!("/?url={host}{PHOTO}&w=300&h=300&fit=cover&a=entropy"), "weserv parameter \"a\""),
        (format!("/?url={host}{PHOTO}&mask=circle"), "weserv parameter \"mask\""),
        (format!("/cdn-cgi/image/width=80,onerror=redirect/{source}"), "unknown option \"onerror\""),
        (format!("/cdn-cgi/image/width=80{PHOTO}"), "needs --origin"),
        (format!("/insecure/rs:fill:300:300/g:sm/plain/{source}"), "imgproxy parameter \"g\""),
        (format!("/insecure/pd:10/plain/{source}"), "imgproxy parameter \"pd\""),
        (format!("/unsafe/300x300/smart/{host}{PHOTO}"), "thumbor parameter \"smart\""),
        (format!("/unsafe/filters:watermark(a.png,0,0,0)/{host}{PHOTO}"), "thumbor parameter \"watermark\""),
    ];
    for (path, named) in cases {
        let reply = get(&client, &proxy.path(&path)).await;
        let body = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, 400, "{path}: {body}");
        assert!(body.contains(named), "{path}: {body}");
    }
    assert_eq!(upstream.hits(PHOTO), 0, "refused before any fetch");
    proxy.stop().await;
}

const IMGPROXY_KEY: &str = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881";
const IMGPROXY_SALT: &str = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";
const THUMBOR_KEY: &str = "MY_SECURE_KEY";
const NATIVE_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

#[tokio::test]
async fn signed_imgproxy_and_thumbor_urls_verify_with_their_own_keys_only() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = [
        "--imgproxy-key",
        IMGPROXY_KEY,
        "--imgproxy-salt",
        IMGPROXY_SALT,
        "--thumbor-key",
        THUMBOR_KEY,
        "--signing-key",
        NATIVE_KEY,
        "--require-signature",
    ];
    let proxy = Proxy::local(dir.path(), &flags).await;
    let client = client();
    let host = host_of(&upstream);
    let source = upstream.url(PHOTO);

    let imgproxy_path = format!("/rs:fill:120:90/{}.png", base64url(&source));
    let imgproxy_sig = python_signature("sha256", IMGPROXY_KEY, IMGPROXY_SALT, &imgproxy_path);
    let reply = get(&client, &proxy.path(&format!("/{imgproxy_sig}{imgproxy_path}"))).await;
    assert_eq!(image_of(&reply, "signed imgproxy"), (ImageFormat::Png, 120, 90));

    let thumbor_path = format!("100x80/{host}{PHOTO}");
    let thumbor_sig = python_signature("sha1", THUMBOR_KEY, "", &thumbor_path);
    assert!(thumbor_sig.len() == 28 && thumbor_sig.ends_with('='), "{thumbor_sig}");
    let reply = get(&client, &proxy.path(&format!("/{thumbor_sig}/{thumbor_path}"))).await;
    assert_eq!(image_of(&reply, "signed thumbor"), (ImageFormat::Jpeg, 100, 80));

    let refusals = [
        // Another request under the same signature.
        (format!("/{imgproxy_sig}{}", imgproxy_path.replace("120", "121")), "invalid URL signature"),
        (format!("/{thumbor_sig}/{}", thumbor_path.replace("100x80", "100x81")), "invalid URL signature"),
        // Unsigned forms, now that the dialect has a key.
        (format!("/insecure{imgproxy_path}"), "invalid URL signature"),
        (format!("/unsafe/{thumbor_path}"), "invalid URL signature"),
        // One dialect's signature in another's place: imgproxy's in thumbor's slot has the wrong shape (no route)
        // and thumbor's key never signs imgproxy paths.
        (
            format!("/{}{imgproxy_path}", python_signature("sha256", &hex(THUMBOR_KEY), "", &imgproxy_path)),
            "invalid URL signature",
        ),
        // Unsigned dialects under --require-signature, like an unsigned native request.
        (format!("/?url={host}{PHOTO}&w=100"), "only serves signed URLs"),
        (format!("/cdn-cgi/image/width=100/{source}"), "only serves signed URLs"),
    ];
    for (path, message) in refusals {
        let reply = get(&client, &proxy.path(&path)).await;
        let body = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, 403, "{path}: {body}");
        assert!(body.contains(message), "{path}: {body}");
    }
    // A native signature never authorises a dialect: the native `sig` of the same request is an unknown option.
    let native =
        mirage::signing::sign_path(&NATIVE_KEY.parse().expect("key"), &format!("/w=100/?{source}")).expect("signs");
    let sig = native.trim_start_matches("/sig=").split(',').next().expect("sig").to_owned();
    let reply = get(&client, &proxy.path(&format!("/cdn-cgi/image/sig={sig},width=100/{source}"))).await;
    assert_eq!(reply.status, 400, "{:?}", String::from_utf8_lossy(&reply.body));
    assert_eq!(upstream.hits(PHOTO), 1);
    // The access log leaves the dialects' signatures out, as it does a native `sig`.
    let log = proxy.stop().await;
    assert!(!log.contains(&imgproxy_sig) && !log.contains(&thumbor_sig), "{log}");
    assert!(log.contains("\"route\":\"/-/rs:fill:120:90/"), "{log}");
    assert!(log.contains("\"route\":\"/-/100x80/"), "{log}");
    // And names the dialect, for dialect requests only.
    let thumbor_line = format!("\"route\":\"/-/100x80/{host}{PHOTO}\",\"dialect\":\"thumbor\"");
    assert!(log.contains(&thumbor_line), "{log}");
    assert!(log.contains("\"route\":\"/\",\"dialect\":\"weserv\""), "{log}");
}

/// `text` as hex (a plain key given where a hex key is expected).
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn without_keys_unsigned_dialects_pass_and_thumbor_signatures_cannot_be_checked() {
    let Setup { upstream: _upstream, dir: _dir, proxy, client, host, source } = setup(false).await;
    // imgproxy with signing off takes any signature segment, as imgproxy does.
    let path = format!("/w:100/plain/{source}");
    let any_sig = python_signature("sha256", IMGPROXY_KEY, IMGPROXY_SALT, &path);
    assert_eq!(get(&client, &proxy.path(&format!("/{any_sig}{path}"))).await.status, 200);
    assert_eq!(get(&client, &proxy.path(&format!("/_{path}"))).await.status, 200);
    let thumbor_sig = python_signature("sha1", THUMBOR_KEY, "", &format!("100x80/{host}{PHOTO}"));
    let reply = get(&client, &proxy.path(&format!("/{thumbor_sig}/100x80/{host}{PHOTO}"))).await;
    assert_eq!(reply.status, 403, "{:?}", String::from_utf8_lossy(&reply.body));
    assert_eq!(get(&client, &proxy.path(&format!("/unsafe/100x80/{host}{PHOTO}"))).await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn dialects_turned_off_are_not_routes() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_of(&upstream);
    let source = upstream.url(PHOTO);
    let client = client();
    let native_only = Proxy::local(dir.path(), &["--dialects", "native"]).await;
    for path in [
        format!("/cdn-cgi/image/width=100/{source}"),
        format!("/insecure/w:100/plain/{source}"),
        format!("/unsafe/100x80/{host}{PHOTO}"),
    ] {
        assert_eq!(get(&client, &native_only.path(&path)).await.status, 404, "{path}");
    }
    // `/?url=` is then a native target, which is not an absolute URL.
    let weserv = get(&client, &native_only.path(&format!("/?url={host}{PHOTO}&w=100"))).await;
    assert_eq!(weserv.status, 400);
    assert!(String::from_utf8_lossy(&weserv.body).contains("target"), "{:?}", weserv.body);
    assert_eq!(get(&client, &native_only.url(&source)).await.status, 200);
    native_only.stop().await;

    let weserv_only = Proxy::local(dir.path(), &["--dialects", "weserv"]).await;
    assert_eq!(get(&client, &weserv_only.url(&source)).await.status, 404, "native off");
    assert_eq!(get(&client, &weserv_only.path(&format!("/w=100/?{source}"))).await.status, 404, "native off");
    assert_eq!(get(&client, &weserv_only.path(&format!("/?url={host}{PHOTO}&w=100"))).await.status, 200);
    weserv_only.stop().await;
}

#[tokio::test]
async fn weserv_default_stands_in_for_a_broken_image_and_maxage_sets_the_lifetime() {
    let upstream = photo_upstream().await;
    upstream.route("/gone.jpg", Route::status(404));
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let host = host_of(&upstream);

    let broken = format!("/?url={host}/gone.jpg&w=100&default=ssl:{host}/nowhere.jpg");
    let without_usable_default = get(&client, &proxy.path(&broken)).await;
    assert_eq!(without_usable_default.status, 404, "a default that fails too gives the real error");

    let with_default = format!("/?url={host}/gone.jpg&w=100&default={host}{PHOTO}");
    let reply = get(&client, &proxy.path(&with_default)).await;
    assert_eq!(reply.status, 404, "the error's status, with the default image as the body");
    assert_eq!(reply.x_cache(), "FALLBACK");
    assert_eq!(reply.header("x-mirage-fallback"), "upstream_not_found");
    let decoded = image::load_from_memory(&reply.body).expect("the default image");
    assert_eq!(decoded.width(), 100, "made as the request asks");
    // The default image is an ordinary source: its variant is cached and shared with its native spelling.
    let native = get(&client, &proxy.path(&format!("/w=100,fit=contain/?{}", upstream.url(PHOTO)))).await;
    assert!(native.x_cache().starts_with("HIT"), "{}", native.x_cache());

    // Bad options are the client's fault: no default for them.
    let bad = get(&client, &proxy.path(&format!("/?url={host}/gone.jpg&q=0&default={host}{PHOTO}"))).await;
    assert_eq!(bad.status, 400);

    let two_days = get(&client, &proxy.path(&format!("/?url={host}{PHOTO}&w=100&maxage=2d"))).await;
    assert_eq!(two_days.status, 200);
    assert!(
        two_days.header("cache-control").starts_with("public, max-age=172800"),
        "{}",
        two_days.header("cache-control")
    );
    // Clamped to --max-ttl (30 days); the same cache entry whatever maxage says.
    let a_year = get(&client, &proxy.path(&format!("/?url={host}{PHOTO}&w=100&maxage=1y"))).await;
    assert!(
        a_year.header("cache-control").starts_with("public, max-age=2592000"),
        "{}",
        a_year.header("cache-control")
    );
    assert!(a_year.x_cache().starts_with("HIT"), "{}", a_year.x_cache());
    assert_eq!(upstream.hits(PHOTO), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn mirage_purge_takes_the_dialects_urls_as_pages_write_them() {
    let upstream = photo_upstream().await;
    upstream.route("/other.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let host = host_of(&upstream);
    let weserv = format!("/?url={host}{PHOTO}&w=100");
    let thumbor = format!("/unsafe/80x80/{host}/other.jpg");
    for path in [&weserv, &thumbor] {
        assert_eq!(get(&client, &proxy.path(path)).await.x_cache(), "MISS", "{path}");
    }
    proxy.stop().await;

    // As pages embed them: weserv's public host, and a thumbor host with a signature (not checked to purge).
    let sig = python_signature("sha1", THUMBOR_KEY, "", &format!("fit-in/10x10/{host}/other.jpg"));
    let urls = [
        format!("https://images.weserv.nl/?url={host}{PHOTO}&w=300"),
        format!("https://thumbor.example/{sig}/fit-in/10x10/{host}/other.jpg"),
    ];
    let output = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .env_remove("MIRAGE_CACHE_DIR")
        .env_remove("MIRAGE_ADMIN_TOKEN")
        .args(["purge", "--cache-dir", dir.path().to_str().expect("UTF-8 path")])
        .args(&urls)
        .output()
        .expect("mirage purge runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.trim(), "purged 4 entries of 2 URLs (0 invalid)", "each original and its variant");

    let proxy = Proxy::local(dir.path(), &[]).await;
    for path in [&weserv, &thumbor] {
        assert_eq!(get(&client, &proxy.path(path)).await.x_cache(), "MISS", "{path} after the purge");
    }
    assert_eq!((upstream.hits(PHOTO), upstream.hits("/other.jpg")), (2, 2));
    proxy.stop().await;
}
