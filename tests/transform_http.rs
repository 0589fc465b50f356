//! The transform route `/{options}/?{target}` over real HTTP: sizes and formats, canonical cache keys, variants
//! made from the cached original (also after a restart), Accept negotiation, 400 messages, bombs, truncated
//! sources, validators, negative caching, the bounded CPU queue, gravity and padding.

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Proxy, Reply, Route, Upstream, avif, client, get, photo, png_chunk, send};
use image::{DynamicImage, ImageFormat as Codec, Rgb, RgbImage, Rgba, RgbaImage};
use mirage::sniff::ImageFormat;

const PHOTO: &str = "/img/photo.jpg";

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const YELLOW: [u8; 3] = [255, 255, 0];

/// `http://PROXY/{options}/?{target}`.
fn variant(proxy: &Proxy, options: &str, target: &str) -> String {
    proxy.path(&format!("/{options}/?{target}"))
}

/// An upstream serving the 500x355 photo at [`PHOTO`].
async fn photo_upstream() -> Upstream {
    let upstream = Upstream::start().await;
    upstream.route(PHOTO, Route::image(photo()));
    upstream
}

/// A 200 image answer, decoded.
fn decoded(reply: &Reply, what: &str) -> DynamicImage {
    assert_eq!(reply.status, 200, "{what}: {:?}", String::from_utf8_lossy(&reply.body));
    image::load_from_memory(&reply.body).unwrap_or_else(|e| panic!("{what}: output does not decode: {e}"))
}

fn dimensions(image: &DynamicImage) -> (u32, u32) {
    (image.width(), image.height())
}

fn magic(body: &[u8]) -> Option<ImageFormat> {
    ImageFormat::sniff(body)
}

fn encode(image: &DynamicImage, codec: Codec) -> Bytes {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, codec).expect("encode fixture");
    Bytes::from(out.into_inner())
}

/// 400x300: red top-left, green top-right, blue bottom-left, yellow bottom-right.
fn quadrants_png() -> Bytes {
    let image = RgbImage::from_fn(400, 300, |x, y| {
        Rgb(match (x < 200, y < 150) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => YELLOW,
        })
    });
    encode(&DynamicImage::ImageRgb8(image), Codec::Png)
}

/// 200x150 with a transparent left half: a source that has alpha.
fn alpha_png() -> Bytes {
    let image =
        RgbaImage::from_fn(200, 150, |x, _| if x < 100 { Rgba([0, 0, 0, 0]) } else { Rgba([10, 120, 200, 255]) });
    encode(&DynamicImage::ImageRgba8(image), Codec::Png)
}

fn assert_rgb_near(image: &DynamicImage, (x, y): (u32, u32), expected: [u8; 3], what: &str) {
    let pixel = image.to_rgb8().get_pixel(x, y).0;
    let close = pixel.iter().zip(expected).all(|(&got, want)| got.abs_diff(want) <= 12);
    assert!(close, "{what}: pixel ({x},{y}) is {pixel:?}, expected about {expected:?}");
}

/// A well-formed PNG header claiming `width` x `height` RGBA pixels, with no pixel data worth the name.
fn png_bomb(width: u32, height: u32) -> Bytes {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 6 (RGBA), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(*b"IHDR", &ihdr));
    // A tiny zlib stream (an empty stored block): nowhere near the pixels the header promises.
    png.extend(png_chunk(*b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01]));
    png.extend(png_chunk(*b"IEND", &[]));
    Bytes::from(png)
}

/// A 200 AVIF answer of `size`, checked by its container (no AV1 decoder builds here: see `common::avif`).
fn assert_avif(reply: &Reply, size: (u32, u32), what: &str) {
    assert_eq!(reply.status, 200, "{what}: {:?}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), "image/avif", "{what}");
    assert_eq!(magic(&reply.body), Some(ImageFormat::Avif), "{what}");
    let info = avif::parse(&reply.body).unwrap_or_else(|e| panic!("{what}: not an AVIF file: {e}"));
    assert!(info.has_brand(*b"avif") && info.av1_config, "{what}: {info:?}");
    assert_eq!(info.size(), Some(size), "{what}: {info:?}");
}

/// Whether `text` names `key` as a word (not as part of another word).
fn names(text: &str, key: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(key).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + key.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Sizes and formats
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn photo_is_resized_cropped_and_converted() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let u = upstream.url(PHOTO);

    let reply = get(&client, &variant(&proxy, "width=300", &u)).await;
    let image = decoded(&reply, "width=300");
    assert_eq!(reply.header("content-type"), "image/jpeg");
    assert_eq!(magic(&reply.body), Some(ImageFormat::Jpeg));
    assert_eq!(dimensions(&image), (300, 213), "500x355 scaled to 300 wide keeps its aspect ratio");
    assert_eq!(reply.header("content-length"), reply.body.len().to_string());

    let reply = get(&client, &variant(&proxy, "w=300,f=webp", &u)).await;
    let image = decoded(&reply, "w=300,f=webp");
    assert_eq!(reply.header("content-type"), "image/webp");
    assert_eq!(magic(&reply.body), Some(ImageFormat::Webp));
    assert_eq!(image.width(), 300);

    let reply = get(&client, &variant(&proxy, "w=300,f=avif", &u)).await;
    assert_avif(&reply, (300, 213), "w=300,f=avif");

    let reply = get(&client, &variant(&proxy, "w=200,h=200,fit=cover", &u)).await;
    let image = decoded(&reply, "w=200,h=200,fit=cover");
    assert_eq!(dimensions(&image), (200, 200));
    assert_eq!(magic(&reply.body), Some(ImageFormat::Jpeg));

    let reply = get(&client, &variant(&proxy, "f=png", &u)).await;
    let image = decoded(&reply, "f=png");
    assert_eq!(reply.header("content-type"), "image/png");
    assert_eq!(magic(&reply.body), Some(ImageFormat::Png));
    assert_eq!(dimensions(&image), (500, 355), "a format change alone keeps the size");

    assert_eq!(upstream.hits(PHOTO), 1, "every variant is made from one fetch of the original");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Cache keys and the cached original
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn canonical_spellings_of_options_share_one_cache_entry() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let u = upstream.url(PHOTO);

    let first = get(&client, &variant(&proxy, "w=300", &u)).await;
    assert_eq!((first.status, first.x_cache()), (200, "MISS"));
    let etag = first.header("etag");
    assert!(!etag.is_empty(), "a variant carries an ETag");

    for spelling in
        ["width=300,fit=scale-down", "fit=scale-down,width=300", "width%3D300", "w%3D300%2Cfit%3Dscale-down"]
    {
        let reply = get(&client, &variant(&proxy, spelling, &u)).await;
        assert_eq!(reply.status, 200, "{spelling}: {:?}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.x_cache(), "HIT-MEMORY", "{spelling}");
        assert_eq!(reply.header("etag"), etag, "{spelling}");
        assert!(reply.body == first.body, "{spelling}: body differs from the first answer");
    }
    assert_eq!(upstream.hits(PHOTO), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn variants_of_a_cached_original_never_contact_upstream() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let u = upstream.url(PHOTO);

    let original = get(&client, &proxy.url(&u)).await;
    assert_eq!((original.status, original.x_cache()), (200, "MISS"));
    assert_eq!(upstream.hits(PHOTO), 1);

    let reply = get(&client, &variant(&proxy, "w=120", &u)).await;
    assert_eq!(decoded(&reply, "w=120").width(), 120);
    let reply = get(&client, &variant(&proxy, "w=80,f=webp", &u)).await;
    assert_eq!(decoded(&reply, "w=80,f=webp").width(), 80);
    assert_eq!(magic(&reply.body), Some(ImageFormat::Webp));
    assert_eq!(upstream.hits(PHOTO), 1, "variants must come from the cached original");
    proxy.stop().await;
}

#[tokio::test]
async fn after_a_restart_a_new_variant_is_made_from_the_disk_cached_original() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client();
    let u = upstream.url(PHOTO);

    let proxy = Proxy::local(dir.path(), &[]).await;
    let original = get(&client, &proxy.url(&u)).await;
    assert_eq!((original.status, original.x_cache()), (200, "MISS"));
    // Stopping waits for queued disk writes.
    proxy.stop().await;

    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client, &variant(&proxy, "w=60", &u)).await;
    let image = decoded(&reply, "w=60 after restart");
    assert_eq!(image.width(), 60);
    assert_eq!(upstream.hits(PHOTO), 1, "the new variant must come from the original on disk");
    let mirror = get(&client, &proxy.url(&u)).await;
    assert_eq!(mirror.status, 200);
    assert!(mirror.x_cache().starts_with("HIT"), "the original is still cached: {}", mirror.x_cache());
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Accept negotiation
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn format_auto_negotiates_on_accept_and_varies() {
    let upstream = photo_upstream().await;
    upstream.route("/img/alpha.png", Route::image(alpha_png()).header("content-type", "image/png"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let auto = variant(&proxy, "w=300,f=auto", &upstream.url(PHOTO));
    let modern = "image/avif,image/webp,*/*";
    let no_avif = "image/webp,*/*";
    let basic = "image/jpeg,*/*";

    let avif = send(client.get(&auto).header("accept", modern)).await;
    assert_avif(&avif, (300, 213), "auto, avif accepted");
    assert_eq!(avif.header("vary"), "Accept");
    assert_eq!(avif.x_cache(), "MISS");

    let webp = send(client.get(&auto).header("accept", no_avif)).await;
    decoded(&webp, "auto, webp accepted");
    assert_eq!(webp.header("content-type"), "image/webp");
    assert_eq!(magic(&webp.body), Some(ImageFormat::Webp));
    assert_eq!(webp.header("vary"), "Accept");
    assert_eq!(webp.x_cache(), "MISS", "the WebP answer must not come from the AVIF entry");

    let jpeg = send(client.get(&auto).header("accept", basic)).await;
    decoded(&jpeg, "auto, jpeg only");
    assert_eq!(jpeg.header("content-type"), "image/jpeg");
    assert_eq!(magic(&jpeg.body), Some(ImageFormat::Jpeg));
    assert_eq!(jpeg.header("vary"), "Accept");
    assert!(!jpeg.x_cache().starts_with("HIT"), "the JPEG answer must not come from the WebP entry");

    // Each negotiated class is its own cache entry.
    let classes = [(modern, "image/avif", &avif), (no_avif, "image/webp", &webp), (basic, "image/jpeg", &jpeg)];
    for (accept, content_type, first) in classes {
        let again = send(client.get(&auto).header("accept", accept)).await;
        assert_eq!(again.status, 200, "{accept}");
        assert_eq!(again.x_cache(), "HIT-MEMORY", "{accept}");
        assert_eq!(again.header("content-type"), content_type, "{accept}");
        assert_eq!(again.header("vary"), "Accept", "{accept}");
        assert!(again.body == first.body, "{accept}: body differs from the first answer");
    }

    // Alpha without WebP in Accept: PNG, which keeps the transparency.
    let alpha = variant(&proxy, "w=100,f=auto", &upstream.url("/img/alpha.png"));
    let png = send(client.get(&alpha).header("accept", "image/jpeg,image/png,*/*")).await;
    let image = decoded(&png, "auto, alpha source");
    assert_eq!(png.header("content-type"), "image/png");
    assert_eq!(magic(&png.body), Some(ImageFormat::Png));
    assert_eq!(png.header("vary"), "Accept");
    assert!(image.color().has_alpha(), "the PNG keeps an alpha channel");
    assert_eq!(image.to_rgba8().get_pixel(10, 10).0[3], 0, "the transparent half stays transparent");

    // An explicit format never varies.
    let explicit =
        send(client.get(variant(&proxy, "w=300,f=webp", &upstream.url(PHOTO))).header("accept", modern)).await;
    decoded(&explicit, "explicit webp");
    assert_eq!(explicit.header("content-type"), "image/webp");
    assert!(explicit.headers.get("vary").is_none(), "explicit format sent Vary: {:?}", explicit.header("vary"));
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_options_are_400_naming_the_key_without_fetching() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let u = upstream.url(PHOTO);

    // (options, one of these names must appear, and these too)
    let cases: [(&str, &[&str], &[&str]); 5] = [
        ("w=abc", &["w", "width"], &[]),
        ("fit=squash", &["fit"], &["scale-down", "contain", "cover", "crop", "pad", "fill"]),
        ("zoom=2", &["zoom"], &[]),
        ("w=1,width=2", &["w", "width"], &[]),
        ("q=101", &["q", "quality"], &["100"]),
    ];
    for (options, keys, also) in cases {
        let reply = get(&client, &variant(&proxy, options, &u)).await;
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, 400, "{options}: {text:?}");
        assert!(reply.header("content-type").starts_with("text/plain"), "{options}: {:?}", reply.headers);
        assert_eq!(reply.header("cache-control"), "no-store", "{options}");
        let line = text.strip_suffix('\n').unwrap_or(&text);
        assert!(!line.is_empty() && !line.contains('\n'), "{options}: not one line: {text:?}");
        assert!(keys.iter().any(|key| names(line, key)), "{options}: {line:?} names none of {keys:?}");
        for value in also {
            assert!(line.contains(value), "{options}: {line:?} does not list {value:?}");
        }
    }
    assert_eq!(upstream.total_hits(), 0, "bad options must be refused before any fetch");
    proxy.stop().await;
}

#[tokio::test]
async fn decompression_bomb_is_413_promptly() {
    let upstream = Upstream::start().await;
    let bomb = png_bomb(100_000, 100_000);
    upstream.route("/bomb.png", Route::image(bomb.clone()).header("content-type", "image/png"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();

    // The fixture is a real PNG header: the decoder reads the claimed size from it.
    let header = image::ImageReader::with_format(Cursor::new(&bomb[..]), Codec::Png).into_dimensions();
    assert_eq!(header.expect("the bomb's header parses"), (100_000, 100_000));

    let started = Instant::now();
    let reply = get(&client, &variant(&proxy, "w=100", &upstream.url("/bomb.png"))).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 413, "{:?}", String::from_utf8_lossy(&reply.body));
    assert!(reply.header("content-type").starts_with("text/plain"));
    assert!(took < Duration::from_secs(2), "the bomb took {took:?} to refuse");
    proxy.stop().await;
}

#[tokio::test]
async fn pixel_limit_applies_to_transforms_only() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--max-source-pixels", "1000"]).await;
    let client = client();
    let u = upstream.url(PHOTO);

    let reply = get(&client, &variant(&proxy, "w=100", &u)).await;
    assert_eq!(reply.status, 413, "500x355 is over 1000 pixels: {:?}", String::from_utf8_lossy(&reply.body));
    let mirror = get(&client, &proxy.url(&u)).await;
    assert_eq!(mirror.status, 200);
    assert!(mirror.body == photo(), "the mirror is byte passthrough whatever the pixel limit");
    proxy.stop().await;
}

#[tokio::test]
async fn avif_over_max_avif_pixels_is_400_or_webp_for_auto() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    // 300x213 = 63,900 pixels is over the limit, 200x142 = 28,400 under it.
    let proxy = Proxy::local(dir.path(), &["--max-avif-pixels", "50000"]).await;
    let client = client();
    let u = upstream.url(PHOTO);
    let modern = "image/avif,image/webp,*/*";

    let refused = send(client.get(variant(&proxy, "w=300,f=avif", &u)).header("accept", modern)).await;
    let text = String::from_utf8_lossy(&refused.body);
    assert_eq!(refused.status, 400, "{text:?}");
    assert!(text.contains("--max-avif-pixels") && text.contains("50000"), "names the flag and the limit: {text:?}");
    assert_eq!(refused.header("cache-control"), "no-store");

    let auto = send(client.get(variant(&proxy, "w=300,f=auto", &u)).header("accept", modern)).await;
    let image = decoded(&auto, "auto over the AVIF limit");
    assert_eq!(auto.header("content-type"), "image/webp", "auto falls back to WebP");
    assert_eq!(magic(&auto.body), Some(ImageFormat::Webp));
    assert_eq!((dimensions(&image), auto.header("vary")), ((300, 213), "Accept"));
    let again = send(client.get(variant(&proxy, "w=300,f=auto", &u)).header("accept", modern)).await;
    assert_eq!((again.x_cache(), again.header("content-type")), ("HIT-MEMORY", "image/webp"));

    // Under the limit, both are AVIF, and an explicit AVIF variant is cached like any other.
    let small = send(client.get(variant(&proxy, "w=200,f=auto", &u)).header("accept", modern)).await;
    assert_avif(&small, (200, 142), "auto under the AVIF limit");
    let explicit = variant(&proxy, "w=200,f=avif", &u);
    let first = get(&client, &explicit).await;
    assert_avif(&first, (200, 142), "explicit AVIF under the limit");
    assert_eq!(first.x_cache(), "MISS");
    let second = get(&client, &explicit).await;
    assert_eq!((second.status, second.x_cache()), (200, "HIT-MEMORY"));
    assert!(second.body == first.body, "the cached AVIF differs from the first answer");
    assert!(second.headers.get("vary").is_none(), "explicit format sent Vary: {:?}", second.header("vary"));
    assert_eq!(upstream.hits(PHOTO), 1, "every variant comes from the cached original");
    proxy.stop().await;
}

#[tokio::test]
async fn truncated_source_is_mirrored_but_not_transformed() {
    let upstream = Upstream::start().await;
    let whole = photo();
    let half = whole.slice(..whole.len() / 2);
    // Full mode: the Content-Length is that of the half actually sent, so the fetch itself succeeds.
    upstream.route("/half.jpg", Route::image(half.clone()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let u = upstream.url("/half.jpg");

    let mirror = get(&client, &proxy.url(&u)).await;
    assert_eq!(mirror.status, 200, "{:?}", String::from_utf8_lossy(&mirror.body));
    assert_eq!(magic(&mirror.body), Some(ImageFormat::Jpeg));
    assert!(mirror.body == half, "the mirror passes the bytes through as they are");

    let reply = get(&client, &variant(&proxy, "w=100", &u)).await;
    let (length, content_type) = (reply.body.len(), reply.header("content-type"));
    assert_eq!(reply.status, 422, "a truncated JPEG must not be transformed: got {length} bytes of {content_type}");
    assert!(content_type.starts_with("text/plain"));
    assert_eq!(reply.header("cache-control"), "no-store");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Validators, HEAD and upstream 404
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn variant_answers_304_and_head() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let url = variant(&proxy, "w=150", &upstream.url(PHOTO));

    let full = get(&client, &url).await;
    assert_eq!(decoded(&full, "w=150").width(), 150);
    let etag = full.header("etag");
    assert!(!etag.is_empty());

    let not_modified = send(client.get(&url).header("if-none-match", etag)).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), etag);

    let other = send(client.get(&url).header("if-none-match", "\"something-else\"")).await;
    assert_eq!(other.status, 200, "a different ETag gets the body");
    assert!(other.body == full.body);

    let head = send(client.head(&url)).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD sent {} body bytes", head.body.len());
    assert_eq!(head.header("content-length"), full.body.len().to_string());
    assert_eq!(head.header("content-type"), "image/jpeg");
    assert_eq!(head.header("etag"), etag);
    assert_eq!(upstream.hits(PHOTO), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_404_for_a_variant_is_404_briefly_cached() {
    let upstream = Upstream::start().await;
    upstream.route("/gone.jpg", Route::status(404).header("content-type", "text/html").body("<h1>nope</h1>"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();

    for round in 0..2 {
        let reply = get(&client, &variant(&proxy, &format!("w={}", 100 + round), &upstream.url("/gone.jpg"))).await;
        assert_eq!(reply.status, 404, "round {round}");
        assert!(!String::from_utf8_lossy(&reply.body).contains("<h1>"), "upstream body leaked");
        let cache_control = reply.header("cache-control");
        let max_age: u64 = cache_control
            .strip_prefix("public, max-age=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: Cache-Control {cache_control:?}"));
        assert!((1..=60).contains(&max_age), "round {round}: max-age {max_age}");
    }
    assert_eq!(upstream.hits("/gone.jpg"), 1, "the 404 is remembered for other variants too");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// The bounded CPU queue
// ---------------------------------------------------------------------------------------------------------------

/// A source that takes a worker a good while: the 4000x3000 bench photo, or else a noisy 2000x2000 JPEG (noise
/// as PNG would exceed `--max-source-bytes` at 3000x3000; as JPEG it is slow enough at 2000x2000).
fn big_image() -> Bytes {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/corpus/photo-4000x3000.jpg");
    if let Ok(bytes) = std::fs::read(&corpus) {
        return Bytes::from(bytes);
    }
    let mut state = 0x2545_F491_u32;
    let noisy = RgbImage::from_fn(2000, 2000, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        Rgb([r, g, b])
    });
    encode(&DynamicImage::ImageRgb8(noisy), Codec::Jpeg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_transform_queue_answers_503_with_retry_after() {
    let upstream = Upstream::start().await;
    upstream.route("/big.jpg", Route::image(big_image()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--transform-workers", "1", "--transform-queue", "0"]).await;
    let client = client();
    let u = upstream.url("/big.jpg");
    let original = get(&client, &proxy.url(&u)).await;
    assert_eq!(original.status, 200);

    // Six distinct keys, each a full-size decode and JPEG encode (about 0.8 s in the test profile for the 4000x3000
    // photo): the first one admitted holds the only worker long after the other five have arrived. (Near-full
    // widths such as w=3900 would be stronger still, but their resize takes over 10 s unoptimised.)
    let urls: Vec<String> = (0..6).map(|i| variant(&proxy, &format!("q={}", 60 + i), &u)).collect();
    let started = Instant::now();
    let timed = futures_util::future::join_all(urls.iter().map(|url| async {
        let reply = get(&client, url).await;
        (reply, started.elapsed())
    }))
    .await;
    let (replies, took): (Vec<Reply>, Vec<Duration>) = timed.into_iter().unzip();
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    for (url, reply) in urls.iter().zip(&replies) {
        assert!(
            matches!(reply.status, 200 | 503),
            "{url}: {} {:?}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        if reply.status == 503 {
            let retry_after: u64 = reply
                .header("retry-after")
                .parse()
                .unwrap_or_else(|_| panic!("{url}: 503 without a numeric Retry-After: {:?}", reply.headers));
            assert!(retry_after >= 1);
            assert_eq!(reply.header("cache-control"), "no-store");
        }
    }
    assert!(statuses.contains(&503), "one worker, no queue, six at once: someone must be refused: {statuses:?}");
    assert!(statuses.contains(&200), "the admitted transform must finish: {statuses:?}");
    // Fail fast: a refusal does not wait for the busy worker, so every 503 is back before the slowest 200.
    let slowest_ok = statuses.iter().zip(&took).filter(|(s, _)| **s == 200).map(|(_, t)| *t).max().unwrap();
    let slowest_refusal = statuses.iter().zip(&took).filter(|(s, _)| **s == 503).map(|(_, t)| *t).max().unwrap();
    assert!(slowest_refusal < slowest_ok, "503s waited: {statuses:?} took {took:?}");

    // A refusal is not remembered: once the worker is free, the same variant is made.
    let refused = urls.iter().zip(&statuses).find(|(_, status)| **status == 503).map(|(url, _)| url).unwrap();
    let retry = get(&client, refused).await;
    assert_eq!(retry.status, 200, "retry of {refused}: {:?}", String::from_utf8_lossy(&retry.body));
    assert_eq!(upstream.hits("/big.jpg"), 1);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Gravity and padding
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn gravity_picks_the_kept_region() {
    let upstream = Upstream::start().await;
    upstream.route("/quad.png", Route::image(quadrants_png()).header("content-type", "image/png"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let u = upstream.url("/quad.png");

    // `cover` crops one axis only, so the uncropped axis' centre sits on a colour boundary: we sample where the
    // gravities disagree instead. 400x300 into 100x100 scales to ~133x100 and crops columns: output x 58 is
    // source x ~174 for left (left half) but ~224 for center; x 42 is ~226 for right but ~176 for center.
    // 400x300 into 200x50 scales to 200x150 and crops rows: output y 40 is source y 80 for top but 180 for
    // center; y 10 is source y 220 for bottom but 120 for center.
    // (gravity, box w x h, pixel sampled, its colour)
    type Case = (&'static str, (u32, u32), (u32, u32), [u8; 3]);
    let cases: [Case; 12] = [
        ("g=left", (100, 100), (58, 25), RED),
        ("g=left", (100, 100), (58, 75), BLUE),
        ("g=right", (100, 100), (42, 75), YELLOW),
        ("g=center", (100, 100), (58, 25), GREEN),
        ("g=center", (100, 100), (42, 75), BLUE),
        ("g=top", (200, 50), (50, 40), RED),
        ("g=bottom", (200, 50), (150, 10), YELLOW),
        ("g=center", (200, 50), (50, 40), BLUE),
        ("g=top-left", (100, 100), (58, 25), RED),
        ("g=top-left", (200, 50), (150, 40), GREEN),
        ("g=bottom-right", (100, 100), (42, 75), YELLOW),
        ("g=bottom-right", (200, 50), (50, 10), BLUE),
    ];
    for (gravity, (w, h), point, colour) in cases {
        let options = format!("w={w},h={h},fit=cover,{gravity},f=png");
        let reply = get(&client, &variant(&proxy, &options, &u)).await;
        let image = decoded(&reply, &options);
        assert_eq!(dimensions(&image), (w, h), "{options}");
        assert_eq!(magic(&reply.body), Some(ImageFormat::Png), "{options}");
        assert_rgb_near(&image, point, colour, &options);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn pad_fills_the_box_with_the_background_colour() {
    let upstream = photo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let options = "w=200,h=200,fit=pad,bg=ff0000,f=png";
    let reply = get(&client(), &variant(&proxy, options, &upstream.url(PHOTO))).await;
    let image = decoded(&reply, options);
    assert_eq!(dimensions(&image), (200, 200));
    assert_eq!(magic(&reply.body), Some(ImageFormat::Png));
    let rgb = image.to_rgb8();
    let red_row = |y: u32| (0..200).all(|x| rgb.get_pixel(x, y).0 == RED);
    // 500x355 contained in 200x200 is 200x142: 29 rows of red above and below.
    let top = (0..200).take_while(|&y| red_row(y)).count();
    let bottom = (0..200).rev().take_while(|&y| red_row(y)).count();
    assert!((27..=30).contains(&top), "{top} red rows on top");
    assert!((27..=30).contains(&bottom), "{bottom} red rows at the bottom");
    assert!(top.abs_diff(bottom) <= 1, "bands are centred: {top} above, {bottom} below");
    let red_in_middle = (0..200).filter(|&x| rgb.get_pixel(x, 100).0 == RED).count();
    assert!(red_in_middle < 20, "the photo is in the middle, not red: {red_in_middle} red pixels on row 100");
    // No side bands: the photo spans the whole width.
    assert!(rgb.get_pixel(0, 100).0 != RED || rgb.get_pixel(199, 100).0 != RED);
    proxy.stop().await;
}
