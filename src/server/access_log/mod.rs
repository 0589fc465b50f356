//! The access log: one `info` line per request, without secrets.
//!
//! A request URI carries two kinds of secret: the `sig=` of a signed URL (replayable for as long as the key is
//! valid) and the target's own query string (origins put access tokens and signed-URL parameters there). Logs
//! travel further than the service (aggregators, tickets, screenshots), so neither is written: the line names the
//! route (the options, without `sig`), the target's host and path, and the answer.
//!
//! It is the one log line every request writes, so it is written without tracing-subscriber's generic formatter
//! (a third of a memory hit's instructions, BENCHMARKS.md "Issue 12") and without a syscall of its own: the line is
//! formatted here, in the format the rest of the log uses (text or JSON, as `tracing-subscriber` writes them), and
//! appended to a buffer that a background thread writes to stderr every `sink::FLUSH_EVERY` (as nginx's
//! `access_log ... buffer=` does). `RUST_LOG` still decides whether it is written (target
//! `mirage::server::access_log`, level `info`), and the server flushes it when it stops.

mod sink;

pub use sink::flush;

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Uri};
use percent_encoding::percent_decode_str;

use crate::config::LogFormat;
use crate::error::ErrorCode;
use crate::handler::Outcome;
use crate::request::{Dialect, SIGNATURE_KEY, Target};

/// Writes the access-log line of one answered request.
pub(super) fn record(
    method: &Method,
    uri: &Uri,
    status: u16,
    outcome: Outcome,
    bytes: u64,
    took: Duration,
    peer: &Peer,
) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    // A plain target (`http://host/path?query`, what signed links and most pages use) is sliced, not parsed: no
    // allocation on the hit path. A percent-encoded one is parsed as the handler parsed it.
    let parsed: Option<Target>;
    let (host, port, path) = match uri.query() {
        None | Some("") => ("-", None, "-"),
        Some(query) => match split_plain(query) {
            Some((host, path)) => (host, None, path),
            None => {
                parsed = Target::parse(query).ok();
                match parsed.as_ref().map(Target::url) {
                    Some(url) => (url.host_str().unwrap_or("-"), url.port(), url.path()),
                    None => ("-", None, "-"),
                }
            }
        },
    };
    // Paths of more than one segment are the URL dialects' (or no route): their secrets are left out too.
    let dialect_path: String;
    let route = if is_native_shape(uri.path()) {
        uri.path()
    } else {
        dialect_path = without_dialect_secrets(uri.path());
        dialect_path.as_str()
    };
    let line = Line {
        method: method.as_str(),
        route: Route(route),
        dialect: outcome.dialect.map(Dialect::name),
        target_host: HostPort(host, port),
        target_path: path,
        status,
        x_cache: outcome.cache_status.map_or("-", |status| status.as_str()),
        error: outcome.error_code.map_or("-", ErrorCode::as_str),
        bytes,
        took,
        peer: &peer.0,
    };
    sink::write(|out| line.write(out, crate::telemetry::format()));
}

/// The fields of one access-log line.
struct Line<'a> {
    method: &'a str,
    route: Route<'a>,
    /// The URL dialect, for requests not in Mirage's own grammar (the field is left out for native ones).
    dialect: Option<&'static str>,
    target_host: HostPort<'a>,
    target_path: &'a str,
    status: u16,
    x_cache: &'static str,
    error: &'static str,
    bytes: u64,
    took: Duration,
    peer: &'a str,
}

/// The tracing target the line is written under, as `tracing` would name this module.
const TARGET: &str = "mirage::server::access_log";

impl Line<'_> {
    /// Appends the line, with its newline, as `tracing-subscriber` would write the same event in `format`.
    fn write(&self, out: &mut String, format: LogFormat) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        // Writing to a `String` cannot fail.
        let _ = match format {
            LogFormat::Text => self.write_text(out, now),
            LogFormat::Json => self.write_json(out, now),
        };
    }

    /// `2026-12-03T10:11:19.350916Z  INFO mirage::server::access_log: request method=GET route=/ …`: Display fields
    /// bare, strings quoted (`Debug`), as tracing-subscriber's default text format. Numbers and addresses are
    /// written digit by digit, and the peer once per connection: `fmt`'s padding and `SocketAddr`'s `Display` were
    /// most of the line's cost.
    fn write_text(&self, out: &mut String, now: Duration) -> fmt::Result {
        timestamp(out, now)?;
        out.push_str("  INFO ");
        out.push_str(TARGET);
        out.push_str(": request method=");
        out.push_str(self.method);
        out.push_str(" route=");
        self.route.write_to(out)?;
        if let Some(dialect) = self.dialect {
            out.push_str(" dialect=");
            debug_string(out, dialect)?;
        }
        out.push_str(" target_host=");
        self.target_host.write_to(out);
        out.push_str(" target_path=");
        debug_string(out, self.target_path)?;
        out.push_str(" status=");
        push_u64(out, u64::from(self.status));
        out.push_str(" x_cache=");
        quoted_word(out, self.x_cache);
        out.push_str(" error=");
        quoted_word(out, self.error);
        out.push_str(" bytes=");
        push_u64(out, self.bytes);
        out.push_str(" ms=");
        push_millis(out, self.took);
        out.push_str(" peer=");
        out.push_str(self.peer);
        out.push('\n');
        Ok(())
    }

    /// One JSON object, with the fields flattened as `--log-format json` writes every other event.
    fn write_json(&self, out: &mut String, now: Duration) -> fmt::Result {
        out.push_str("{\"timestamp\":\"");
        timestamp(out, now)?;
        out.push_str("\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
        json_string(out, self.method)?;
        out.push_str(",\"route\":\"");
        self.route.write_to(&mut JsonEscaped(out))?;
        if let Some(dialect) = self.dialect {
            out.push_str("\",\"dialect\":\"");
            out.push_str(dialect);
        }
        out.push_str("\",\"target_host\":\"");
        let mut host = JsonEscaped(out);
        host.write_str(self.target_host.0)?;
        if let Some(port) = self.target_host.1 {
            out.push(':');
            push_u64(out, u64::from(port));
        }
        out.push_str("\",\"target_path\":");
        json_string(out, self.target_path)?;
        out.push_str(",\"status\":");
        push_u64(out, u64::from(self.status));
        out.push_str(",\"x_cache\":");
        quoted_word(out, self.x_cache);
        out.push_str(",\"error\":");
        quoted_word(out, self.error);
        out.push_str(",\"bytes\":");
        push_u64(out, self.bytes);
        out.push_str(",\"ms\":");
        push_millis(out, self.took);
        out.push_str(",\"peer\":\"");
        out.push_str(self.peer);
        out.push_str("\",\"target\":\"");
        out.push_str(TARGET);
        out.push_str("\"}\n");
        Ok(())
    }
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber's default timer writes it. The part up to the second
/// is formatted once a second per thread.
fn timestamp(out: &mut String, since_epoch: Duration) -> fmt::Result {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let seconds = since_epoch.as_secs();
    SECOND.with(|cached| {
        let Ok(mut cached) = cached.try_borrow_mut() else { return format_second(out, seconds) };
        if cached.0 != seconds {
            cached.1.clear();
            format_second(&mut cached.1, seconds)?;
            cached.0 = seconds;
        }
        out.push_str(&cached.1);
        Ok(())
    })?;
    out.push('.');
    push_padded(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push('Z');
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn format_second(out: &mut String, seconds: u64) -> fmt::Result {
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    write!(out, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `value` in decimal (itoa: two digits per step, no UTF-8 check of its own digits).
fn push_u64(out: &mut String, value: u64) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// `value` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut String, value: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Milliseconds with three decimals (microsecond precision), as a JSON and text number.
fn push_millis(out: &mut String, took: Duration) {
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    out.push('.');
    push_padded(out, micros % 1000, 3);
}

/// The client's address as the log writes it (`ip:port`, or `[ip]:port` for IPv6, as `SocketAddr` displays it),
/// formatted once per connection rather than once per request.
pub(super) struct Peer(String);

impl Peer {
    pub(super) fn new(peer: SocketAddr) -> Peer {
        Peer(peer.to_string())
    }
}

/// One of our own codes (`X-Cache` values, error codes, `-`) in quotes: words of letters, digits, `-` and `_`,
/// the same in `Debug` and JSON, so there is nothing to check or escape.
fn quoted_word(out: &mut String, word: &'static str) {
    out.push('"');
    out.push_str(word);
    out.push('"');
}

/// Bytes of printable ASCII, less those `except` names: one table lookup per byte where a chain of comparisons
/// cost more than the line's other work.
const fn printable_ascii_except(except: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut byte = 0x20;
    while byte < 0x7f {
        table[byte] = true;
        byte += 1;
    }
    let mut index = 0;
    while index < except.len() {
        table[except[index] as usize] = false;
        index += 1;
    }
    table
}

/// What `Debug` writes as it is inside quotes.
const DEBUG_PLAIN: [bool; 256] = printable_ascii_except(b"\"\\");

/// What a route is written with as it is: no `%` to decode, and not the first letter of `sig` (checked apart).
const ROUTE_PLAIN: [bool; 256] = printable_ascii_except(b"%sS");

/// `value` as `Debug` quotes it: most values need no escaping and are copied as they are.
fn debug_string(out: &mut String, value: &str) -> fmt::Result {
    if !value.bytes().all(|b| DEBUG_PLAIN[usize::from(b)]) {
        return write!(out, "{value:?}");
    }
    out.push('"');
    out.push_str(value);
    out.push('"');
    Ok(())
}

/// A `fmt::Write` that escapes what is written into it for the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut String);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape_json_into(self.0, text)
    }
}

/// `value` as a JSON string: quotes, backslashes and control characters escaped.
fn json_string(out: &mut String, value: &str) -> fmt::Result {
    out.push('"');
    escape_json_into(out, value)?;
    out.push('"');
    Ok(())
}

/// `text` escaped for the inside of a JSON string.
fn escape_json_into(out: &mut String, text: &str) -> fmt::Result {
    if !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(text);
        return Ok(());
    }
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => write!(out, "\\u{:04x}", u32::from(c))?,
            c => out.push(c),
        }
    }
    Ok(())
}

/// The host (with its port, without userinfo) and the path (without query or fragment) of a target written as a
/// plain `http://` or `https://` URL; `None` for anything else (percent-encoded, odd case), which is parsed.
fn split_plain(raw: &str) -> Option<(&str, &str)> {
    let rest = raw.strip_prefix("http://").or_else(|| raw.strip_prefix("https://"))?;
    // Byte loops: these strings are short, and a generic char-set search costs more than the bytes it looks at.
    let authority_end = rest.bytes().position(|b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority.bytes().rposition(|b| b == b'@').map_or(authority, |at| &authority[at + 1..]);
    if host.is_empty() {
        return None;
    }
    let after = &rest[authority_end..];
    let path = &after[..after.bytes().position(|b| matches!(b, b'?' | b'#')).unwrap_or(after.len())];
    Some((host, if path.is_empty() { "/" } else { path }))
}

/// At most one segment (`/`, `/{options}/`, `/healthz`): Mirage's own grammar, whose only secret (`sig`) `Route`
/// leaves out.
fn is_native_shape(path: &str) -> bool {
    let bytes = path.as_bytes();
    let inner = bytes.strip_prefix(b"/").unwrap_or(bytes);
    let inner = inner.strip_suffix(b"/").unwrap_or(inner);
    !inner.contains(&b'/')
}

/// A path of more than one segment without its secrets: a first segment that may be imgproxy's or thumbor's
/// signature (anything but `insecure`, `unsafe`, `_` and `cdn-cgi`) becomes `-`, whether or not the request parsed,
/// and the userinfo of a source URL written in the path (`https://user:password@host/`) is dropped.
fn without_dialect_secrets(path: &str) -> String {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (first, after) = rest.split_once('/').unwrap_or((rest, ""));
    let first = if matches!(first, "insecure" | "unsafe" | "_" | "cdn-cgi") { first } else { "-" };
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(first);
    if !after.is_empty() || rest.contains('/') {
        out.push('/');
    }
    let mut after = after;
    while let Some(scheme_end) = after.find("://") {
        let (head, authority_and_more) = after.split_at(scheme_end + 3);
        out.push_str(head);
        let authority_end = authority_and_more.find('/').unwrap_or(authority_and_more.len());
        let authority = &authority_and_more[..authority_end];
        out.push_str(authority.rsplit_once('@').map_or(authority, |(_, host)| host));
        after = &authority_and_more[authority_end..];
    }
    out.push_str(after);
    out
}

/// A host with its port when the URL names one.
struct HostPort<'a>(&'a str, Option<u16>);

impl HostPort<'_> {
    /// `host` or `host:port`.
    fn write_to(&self, out: &mut String) {
        out.push_str(self.0);
        if let Some(port) = self.1 {
            out.push(':');
            push_u64(out, u64::from(port));
        }
    }
}

struct Route<'a>(&'a str);

impl Route<'_> {
    /// Writes the path without its signature. A path without `%` and without `sig` in any case (nearly every
    /// one) is written as it is: there is nothing to decode or leave out.
    fn write_to(&self, f: &mut impl fmt::Write) -> fmt::Result {
        // One pass over the bytes: anything to decode (`%`), a control or non-ASCII character (decoded and checked
        // below), or what may start `sig` in any case sends the path the long way.
        let bytes = self.0.as_bytes();
        let plain = bytes.iter().enumerate().all(|(at, &b)| {
            ROUTE_PLAIN[usize::from(b)]
                || (b.eq_ignore_ascii_case(&SIGNATURE_KEY.as_bytes()[0])
                    && !bytes
                        .get(at..at + SIGNATURE_KEY.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(SIGNATURE_KEY.as_bytes())))
        });
        if plain {
            return f.write_str(self.0);
        }
        let is_signature = |pair: &str| {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            key.trim().eq_ignore_ascii_case(SIGNATURE_KEY)
        };
        for (index, segment) in self.0.split('/').enumerate() {
            let decoded = percent_decode_str(segment).decode_utf8_lossy();
            // A segment that was nothing but the signature goes with its slash: `/sig=S/` is `/`.
            if !decoded.is_empty() && decoded.split(',').all(is_signature) {
                continue;
            }
            if index > 0 {
                f.write_str("/")?;
            }
            let mut first = true;
            for pair in decoded.split(',').filter(|pair| !is_signature(pair)) {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                if !pair.contains(char::is_control) {
                    f.write_str(pair)?;
                    continue;
                }
                for c in pair.chars() {
                    if c.is_control() { write!(f, "{}", c.escape_default())? } else { write!(f, "{c}")? }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            method: "GET",
            route: Route("/width=300/"),
            dialect: None,
            target_host: HostPort("h.example", Some(8080)),
            target_path: "/a \"b\".jpg",
            status: 200,
            x_cache: "HIT-MEMORY",
            error: "-",
            bytes: 15_614,
            took: Duration::from_micros(250),
            peer: "127.0.0.1:5555",
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut out = String::new();
        timestamp(&mut out, Duration::new(0, 0)).unwrap();
        timestamp(&mut out, Duration::new(951_782_400, 1_500)).unwrap(); // 2000-02-29, a leap day
        timestamp(&mut out, Duration::new(1_796_292_724, 129_000_000)).unwrap();
        assert_eq!(out, "1970-01-01T00:00:00.000000Z2000-02-29T00:00:00.000001Z2026-12-03T10:12:04.129000Z");
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field() {
        let mut out = String::new();
        line().write(&mut out, LogFormat::Json);
        assert!(out.ends_with("}\n") && out.matches('\n').count() == 1, "{out}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["message"], "request");
        assert_eq!(json["level"], "INFO");
        assert_eq!(json["target"], TARGET);
        assert_eq!(json["route"], "/width=300/");
        assert_eq!(json["target_host"], "h.example:8080");
        assert_eq!(json["target_path"], "/a \"b\".jpg");
        assert_eq!(json["status"], 200);
        assert_eq!(json["x_cache"], "HIT-MEMORY");
        assert_eq!(json["bytes"], 15_614);
        assert_eq!(json["ms"], 0.25);
        assert_eq!(json["peer"], "127.0.0.1:5555");
        let mut control = String::new();
        json_string(&mut control, "a\u{1}\\").unwrap();
        assert_eq!(control, "\"a\\u0001\\\\\"");
    }

    #[test]
    fn a_text_line_reads_as_tracing_writes_events() {
        let mut out = String::new();
        line().write(&mut out, LogFormat::Text);
        let (_, rest) = out.split_once("Z  INFO ").unwrap();
        assert_eq!(
            rest,
            "mirage::server::access_log: request method=GET route=/width=300/ target_host=h.example:8080 \
             target_path=\"/a \\\"b\\\".jpg\" status=200 x_cache=\"HIT-MEMORY\" error=\"-\" bytes=15614 ms=0.250 \
             peer=127.0.0.1:5555\n"
        );
    }

    #[test]
    fn a_dialect_request_names_its_dialect_after_the_route() {
        let imgproxy = Line { route: Route("/-/w:300/plain/http://h/a.jpg"), dialect: Some("imgproxy"), ..line() };
        // The path as the record writes it: signatures and source userinfo left out, parsed or not.
        for (path, logged) in [
            (
                "/AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM/w:300/plain/http://h/a.jpg",
                "/-/w:300/plain/http://h/a.jpg",
            ),
            ("/insecure/w:300/plain/https://u:p@h/a.jpg", "/insecure/w:300/plain/https://h/a.jpg"),
            ("/unsafe/300x0/https://user@h/a.jpg", "/unsafe/300x0/https://h/a.jpg"),
            ("/cdn-cgi/image/width=80/https://u:p@h/a.jpg", "/cdn-cgi/image/width=80/https://h/a.jpg"),
            ("/c2lnbmF0dXJlLW9mLXRodW1ib3I=/fit-in/10x10/h/a.jpg", "/-/fit-in/10x10/h/a.jpg"),
            ("/a/b", "/-/b"),
        ] {
            assert!(!is_native_shape(path), "{path}");
            assert_eq!(without_dialect_secrets(path), logged, "{path}");
        }
        for native in ["/", "/w=300/", "/sig=abc,w=300/", "/healthz"] {
            assert!(is_native_shape(native), "{native}");
        }
        let mut text = String::new();
        imgproxy.write(&mut text, LogFormat::Text);
        assert!(text.contains(" route=/-/w:300/plain/http://h/a.jpg dialect=\"imgproxy\" target_host="), "{text}");
        let mut json = String::new();
        imgproxy.write(&mut json, LogFormat::Json);
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (json["route"].as_str(), json["dialect"].as_str()),
            (Some("/-/w:300/plain/http://h/a.jpg"), Some("imgproxy"))
        );
        let mut native = String::new();
        line().write(&mut native, LogFormat::Json);
        assert!(!native.contains("dialect"), "{native}");
    }

    #[test]
    fn plain_targets_are_sliced_without_userinfo_query_or_fragment() {
        assert_eq!(split_plain("http://h.example/a/b.jpg?token=x#f"), Some(("h.example", "/a/b.jpg")));
        assert_eq!(split_plain("https://u:pw@h.example:8443?q=1"), Some(("h.example:8443", "/")));
        assert_eq!(split_plain("http://h.example#x?y"), Some(("h.example", "/")));
        assert_eq!(split_plain("http%3A%2F%2Fh.example%2Fa.jpg"), None);
        assert_eq!(split_plain("http:///a.jpg"), None);
    }

    #[test]
    fn routes_lose_their_signatures() {
        let route = |path: &str| {
            let mut written = String::new();
            Route(path).write_to(&mut written).unwrap();
            written
        };
        assert_eq!(route("/"), "/");
        assert_eq!(route("/healthz"), "/healthz");
        assert_eq!(route("/sig=abc,width=300/"), "/width=300/");
        assert_eq!(route("/width=300,SIG=abc,h=2/"), "/width=300,h=2/");
        assert_eq!(route("/sig%3Dabc%2Cwidth%3D300/"), "/width=300/");
        assert_eq!(route("/sig=abc/"), "/");
        assert_eq!(route("/a%0Ab/x/sig=q"), "/a\\nb/x");
    }
}
