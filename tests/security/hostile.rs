//! Hostile images through the transform route: each gets a clear 4xx (or a correct image), fast, and the
//! server keeps answering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::raw::{RawUpstream, ok, path_of};
use crate::common::{Proxy, client, get, photo, png_chunk};
use crate::limits::gif_with_frames;

/// A valid 1x1 RGBA PNG with `extra` ancillary chunks of `kind` between IHDR and IDAT.
fn png_with_chunks(width: u32, height: u32, extra: usize) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png.extend(png_chunk(*b"IHDR", &ihdr));
    let filler = png_chunk(*b"zzZz", b"");
    for _ in 0..extra {
        png.extend_from_slice(&filler);
    }
    // zlib stream of one stored block: filter byte 0 + 4 bytes of RGBA.
    let raw = [0u8, 10, 20, 30, 255];
    let mut idat = vec![0x78, 0x01, 0x01, 0x05, 0x00, 0xFA, 0xFF];
    idat.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    idat.extend_from_slice(&((b << 16) | a).to_be_bytes());
    png.extend(png_chunk(*b"IDAT", &idat));
    png.extend(png_chunk(*b"IEND", b""));
    png
}

#[tokio::test]
async fn hostile_images_get_clear_errors_fast() {
    let mut truncated_jpeg = photo().to_vec();
    truncated_jpeg.truncate(truncated_jpeg.len() / 2);
    let mut truncated_png = png_with_chunks(1, 1, 0);
    truncated_png.truncate(40);
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("/truncated.jpg", "image/jpeg", truncated_jpeg, 422),
        ("/truncated.png", "image/png", truncated_png, 422),
        // HTML served as image/png: the magic decides, not the label.
        ("/wrong-magic.png", "image/png", b"<html><script>alert(1)</script></html>".to_vec(), 415),
        ("/svg.png", "image/png", b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(), 415),
        ("/zeros.jpg", "image/jpeg", vec![0u8; 4096], 415),
        // 100 000 x 100 000 declared in 33 bytes of header: refused from the header, nothing decoded.
        ("/huge.png", "image/png", png_with_chunks(100_000, 100_000, 0), 413),
        ("/wide.png", "image/png", png_with_chunks(u32::MAX >> 1, 1, 0), 413),
        ("/frames.gif", "image/gif", gif_with_frames(2000), 413),
    ];
    let table: Arc<Vec<(String, String, Vec<u8>)>> =
        Arc::new(cases.iter().map(|(p, t, b, _)| (p.to_string(), t.to_string(), b.clone())).collect());
    let upstream = RawUpstream::start(move |head| {
        let path = path_of(head);
        let (_, content_type, body) = table.iter().find(|(p, _, _)| p == path).expect("known path");
        ok(content_type, body)
    })
    .await;
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks"]).await;
    let client = client();
    for (path, _, _, status) in &cases {
        let started = Instant::now();
        let url = format!("http://{}/w=50,f=gif/?{}", proxy.addr, upstream.url(path));
        let reply = get(&client, &url).await;
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, *status, "{path}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{path}: one line of text");
        assert!(started.elapsed() < Duration::from_secs(5), "{path} took {:?}", started.elapsed());
    }
    assert_eq!(get(&client, &format!("http://{}/healthz", proxy.addr)).await.status, 200);
    proxy.stop().await;
}

/// 50 000 empty ancillary chunks before the image data: the header walk and the decoder get through them
/// (a valid image comes out) in well under the limits.
#[tokio::test]
async fn png_with_fifty_thousand_chunks_is_handled_fast() {
    let deep = png_with_chunks(1, 1, 50_000);
    assert!(deep.len() > 500_000);
    let upstream = RawUpstream::start(move |_| ok("image/png", &deep)).await;
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks"]).await;
    let started = Instant::now();
    let reply = get(&client(), &format!("http://{}/w=10,f=png/?{}", proxy.addr, upstream.url("/deep.png"))).await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    match reply.status {
        200 => {
            let image = image::load_from_memory(&reply.body).expect("a valid PNG");
            assert!(image.width() <= 10 && image.height() <= 10);
        }
        status => assert!((400..500).contains(&status), "{status}: {:?}", reply.body),
    }
    proxy.stop().await;
}
