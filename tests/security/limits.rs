//! Request-size and work limits over real HTTP: URI length (414), request head size and header count (431),
//! frames of animated GIFs (413), output pixels (413). Source bytes, source pixels, redirects and in-flight
//! fetches have their tests in errors.rs and transform_http.rs (see SECURITY.md).

use std::fmt::Write as _;
use std::io::Cursor;
use std::time::Duration;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, Rgba, RgbaImage};

use crate::common::raw::{RawUpstream, ok, raw_exchange, raw_status};
use crate::common::{Proxy, client, get};

#[tokio::test]
async fn uri_longer_than_the_limit_is_414_without_fetching() {
    let recorder = RawUpstream::recorder().await;
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--max-uri-bytes", "200"]).await;
    let client = client();
    let long = recorder.url(&format!("/{}.jpg", "a".repeat(300)));
    let reply = get(&client, &proxy.url(&long)).await;
    let text = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 414, "{text}");
    assert_eq!(text.trim(), "request URI is longer than 200 bytes");
    assert_eq!(recorder.connections(), 0);
    // Under the limit, the same route is served normally (here: the health check).
    assert_eq!(get(&client, &format!("http://{}/healthz", proxy.addr)).await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn default_uri_limit_is_8_kib() {
    let proxy = Proxy::start(&["--no-disk-cache"]).await;
    let target = format!("http://example.com/{}", "b".repeat(9000));
    let reply = get(&client(), &proxy.url(&target)).await;
    assert_eq!(reply.status, 414);
    proxy.stop().await;
}

#[tokio::test]
async fn request_head_over_the_limit_is_431() {
    let proxy = Proxy::start(&["--no-disk-cache", "--max-request-bytes", "8KiB"]).await;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\n\r\n", "f".repeat(9000));
    let (response, closed, _) = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), 431, "{}", String::from_utf8_lossy(&response));
    assert!(closed, "the connection stays open after a 431");
    // The same request with a small header is fine.
    let small = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Fill: f\r\n\r\n";
    let (response, _, _) = raw_exchange(proxy.addr, small, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn more_than_100_headers_is_431() {
    let proxy = Proxy::start(&["--no-disk-cache"]).await;
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for n in 0..150 {
        let _ = write!(request, "X-H{n}: v\r\n");
    }
    request.push_str("\r\n");
    let (response, _, _) = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), 431, "{}", String::from_utf8_lossy(&response));
    proxy.stop().await;
}

#[tokio::test]
async fn max_request_bytes_under_8_kib_is_a_startup_error() {
    use clap::Parser;
    let args = mirage::config::ServeArgs::try_parse_from(["serve", "--max-request-bytes", "4KiB"]).unwrap();
    assert!(args.into_config().unwrap_err().contains("--max-request-bytes"));
}

/// An animated GIF of `frames` 4x4 frames.
pub fn gif_with_frames(frames: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(Cursor::new(&mut bytes), 30);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for n in 0..frames {
            let shade = (n % 256) as u8;
            let image = RgbaImage::from_pixel(4, 4, Rgba([shade, 255 - shade, 0, 255]));
            encoder.encode_frame(Frame::from_parts(image, 0, 0, Delay::from_numer_denom_ms(10, 1))).unwrap();
        }
    }
    bytes
}

#[tokio::test]
async fn gif_with_more_frames_than_max_frames_is_413() {
    let over = gif_with_frames(6);
    let under = gif_with_frames(5);
    let upstream = RawUpstream::start(move |head| {
        if head.starts_with("GET /over.gif") { ok("image/gif", &over) } else { ok("image/gif", &under) }
    })
    .await;
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--max-frames", "5"]).await;
    let client = client();
    let variant = |path: &str| format!("http://{}/w=2,f=gif/?{}", proxy.addr, upstream.url(path));
    let reply = get(&client, &variant("/over.gif")).await;
    let text = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 413, "{text}");
    assert!(text.contains("frames"), "{text}");
    let reply = get(&client, &variant("/under.gif")).await;
    assert_eq!(reply.status, 200, "{:?}", String::from_utf8_lossy(&reply.body));
    assert_eq!(&reply.body[..6], b"GIF89a");
    proxy.stop().await;
}

#[tokio::test]
async fn output_over_max_output_pixels_is_413_before_decoding() {
    let upstream = RawUpstream::start(|_| ok("image/gif", &gif_with_frames(1))).await;
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--max-output-pixels", "10000"]).await;
    let client = client();
    let reply = get(&client, &format!("http://{}/w=200,h=200,fit=fill/?{}", proxy.addr, upstream.url("/a.gif"))).await;
    let text = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 413, "{text}");
    let reply = get(&client, &format!("http://{}/w=100,h=100,fit=fill/?{}", proxy.addr, upstream.url("/a.gif"))).await;
    assert_eq!(reply.status, 200, "{:?}", String::from_utf8_lossy(&reply.body));
    proxy.stop().await;
}
