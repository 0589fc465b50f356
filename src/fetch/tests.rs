//! Unit tests of the fetcher's private checks. The tests that talk to loopback servers use only the public API,
//! so they live in tests/fetch.rs, next to the raw test server they share with the security suite.

use super::*;

fn config(network: NetworkPolicy) -> FetchConfig {
    FetchConfig { network, ..FetchConfig::default() }
}

fn open() -> NetworkPolicy {
    NetworkPolicy { allow_private: true, allow_nets: vec![] }
}

fn fetcher(config: FetchConfig) -> Fetcher {
    Fetcher::new(config).expect("fetcher builds")
}

#[test]
fn non_http_target_is_forbidden() {
    let f = fetcher(config(open()));
    let url = Url::parse("ftp://127.0.0.1/x").expect("url");
    assert!(matches!(f.check_target(&url, false), Err(FetchError::Forbidden(_))));
}

#[test]
fn error_messages_are_single_lines() {
    let errors = [
        FetchError::Forbidden("target address 127.0.0.1 is forbidden (loopback)".into()),
        FetchError::NotFound(404),
        FetchError::UpstreamStatus(502),
        FetchError::TooLarge { limit: 26_214_400 },
        FetchError::Timeout,
        FetchError::TooManyRedirects(5),
        FetchError::BadRedirect("redirect without a Location header".into()),
        FetchError::Connect("Connection refused (os error 111)".into()),
        FetchError::Body("body is shorter than its Content-Length".into()),
    ];
    for e in &errors {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
    }
    assert_eq!(errors[1].to_string(), "upstream answered 404");
    assert_eq!(errors[3].to_string(), "source image is larger than 26214400 bytes");
}

#[test]
fn streamed_bodies_are_kept_at_exact_size() {
    let mut grown = BytesMut::with_capacity(16);
    // As chunks arrive: the buffer doubles, so it ends with spare capacity.
    grown.extend_from_slice(&[1u8; 600]);
    grown.extend_from_slice(&[2u8; 100]);
    assert!(grown.capacity() > grown.len());
    let body = exact(grown);
    assert_eq!(body.len(), 700);
    let back = body.try_into_mut().expect("unique");
    assert_eq!(back.capacity(), 700, "spare capacity kept");
}
