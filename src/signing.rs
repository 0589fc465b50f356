//! Signed URLs: HMAC-SHA256 over a request's canonical form, so that only holders of a key can mint links.
//!
//! The signed message is `{canonical options}/?{canonical target}` (see [`ImageRequest::signing_message`]); the
//! signature is its HMAC-SHA256 under the key, in unpadded base64url, carried as `sig=` in the options segment.
//! Verification is constant-time (`hmac`'s `verify_slice`) and any configured key may verify (rotation).

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::request::{DialectSignature, ImageRequest, RequestError, Route, parse_route};

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

/// Shortest key accepted, in bytes: shorter HMAC keys are guessable.
pub const MIN_KEY_BYTES: usize = 16;

/// A secret signing key, given in hex. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl FromStr for SigningKey {
    type Err = String;

    fn from_str(text: &str) -> Result<SigningKey, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| "signing key must be hexadecimal".to_owned())?;
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "signing key must be at least {MIN_KEY_BYTES} bytes ({} hex digits); try `openssl rand -hex 32`",
                MIN_KEY_BYTES * 2
            ));
        }
        Ok(SigningKey(bytes))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<{} bytes>)", self.0.len())
    }
}

impl SigningKey {
    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// The signature of `message`: HMAC-SHA256, unpadded base64url (43 characters).
    pub fn sign(&self, message: &str) -> String {
        let mut mac = self.mac();
        mac.update(message.as_bytes());
        base64url_encode(&mac.finalize().into_bytes())
    }

    /// Whether `signature` (base64url text) is this key's signature of `message`, compared in constant time.
    pub fn verifies(&self, message: &str, signature: &str) -> bool {
        let Some(tag) = base64url_decode(signature) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(message.as_bytes());
        mac.verify_slice(&tag).is_ok()
    }
}

/// Whether and how requests must be signed. The default (no keys) turns signing off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigningPolicy {
    /// Keys that verify; the first one is the one to sign new links with.
    pub keys: Vec<SigningKey>,
    /// Refuse unsigned requests.
    pub required: bool,
}

/// Why a request's signature was refused (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `--require-signature` and no `sig`.
    #[error("this server only serves signed URLs: add sig= to the options")]
    Missing,
    /// A `sig` that no configured key produced (or a server without keys, which cannot verify any).
    #[error("invalid URL signature")]
    Invalid,
}

impl SigningPolicy {
    /// Checks the signature a request carried. A present signature is always verified, required or not: a wrong
    /// one is refused rather than ignored. Unsigned requests pass unless signatures are required.
    pub fn check(&self, request: &ImageRequest, signature: Option<&str>) -> Result<(), SignatureError> {
        match signature {
            None if self.required => Err(SignatureError::Missing),
            None => Ok(()),
            Some(signature) => {
                let message = request.signing_message();
                // Every key is tried (rotation); which one matched is not observable from the answer.
                if self.keys.iter().any(|key| key.verifies(&message, signature)) {
                    Ok(())
                } else {
                    Err(SignatureError::Invalid)
                }
            }
        }
    }
}

/// imgproxy's key and salt (`--imgproxy-key`, `--imgproxy-salt`; hex, as imgproxy's `IMGPROXY_KEY` and
/// `IMGPROXY_SALT`): the signature is the unpadded base64url HMAC-SHA256 under the key of salt + path, where the
/// path is everything after the signature segment, from its `/`. `Debug` never prints either.
#[derive(Clone, PartialEq, Eq)]
pub struct ImgproxyKey {
    key: Vec<u8>,
    salt: Vec<u8>,
}

impl fmt::Debug for ImgproxyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImgproxyKey(<{} bytes>, salt <{} bytes>)", self.key.len(), self.salt.len())
    }
}

impl ImgproxyKey {
    /// The pair from its hex texts. imgproxy takes keys of any length; an empty one is refused (it would sign
    /// nothing worth checking).
    pub fn from_hex(key: &str, salt: &str) -> Result<ImgproxyKey, String> {
        let decode = |flag: &str, text: &str| {
            hex::decode(text.trim())
                .ok()
                .filter(|bytes| !bytes.is_empty())
                .ok_or_else(|| format!("{flag} must be non-empty hexadecimal"))
        };
        Ok(ImgproxyKey { key: decode("--imgproxy-key", key)?, salt: decode("--imgproxy-salt", salt)? })
    }

    fn mac(&self, path: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(&self.salt);
        mac.update(path.as_bytes());
        mac
    }

    /// The signature of `path` (from the `/` after the signature segment).
    pub fn sign(&self, path: &str) -> String {
        base64url_encode(&self.mac(path).finalize().into_bytes())
    }

    /// Whether `signature` is this key's signature of `path`, compared in constant time.
    pub fn verifies(&self, path: &str, signature: &str) -> bool {
        base64url_decode(signature).is_some_and(|tag| self.mac(path).verify_slice(&tag).is_ok())
    }
}

/// thumbor's `SECURITY_KEY` (`--thumbor-key`, the plain text): the signature is the urlsafe base64 (padded)
/// HMAC-SHA1 under the key of the path after `/{signature}/`. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ThumborKey(Vec<u8>);

impl fmt::Debug for ThumborKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ThumborKey(<{} bytes>)", self.0.len())
    }
}

impl FromStr for ThumborKey {
    type Err = String;

    fn from_str(text: &str) -> Result<ThumborKey, String> {
        if text.is_empty() {
            return Err("--thumbor-key must not be empty".to_owned());
        }
        Ok(ThumborKey(text.as_bytes().to_vec()))
    }
}

impl ThumborKey {
    fn mac(&self, path: &str) -> HmacSha1 {
        let mut mac = <HmacSha1 as KeyInit>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(path.as_bytes());
        mac
    }

    /// The signature of `path` (after `/{signature}/`): 28 characters, with thumbor's one `=` of padding.
    pub fn sign(&self, path: &str) -> String {
        base64url_encode(&self.mac(path).finalize().into_bytes()) + "="
    }

    /// Whether `signature` is this key's signature of `path`, compared in constant time.
    pub fn verifies(&self, path: &str, signature: &str) -> bool {
        let unpadded = signature.strip_suffix('=').unwrap_or(signature);
        base64url_decode(unpadded).is_some_and(|tag| self.mac(path).verify_slice(&tag).is_ok())
    }
}

/// The keys of the dialects that sign their URLs; each verifies its own dialect's signatures only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialectKeys {
    /// imgproxy's key and salt: with them, `insecure` is refused and every signature is verified.
    pub imgproxy: Option<ImgproxyKey>,
    /// thumbor's key: with it, `unsafe` is refused and every signature is verified.
    pub thumbor: Option<ThumborKey>,
}

impl SigningPolicy {
    /// Checks the signature a dialect request carried, with that dialect's key only (Mirage's own keys never
    /// verify a dialect's URL, nor the reverse: the types keep them apart).
    ///
    /// A dialect without signatures (weserv, Cloudflare), imgproxy's `insecure` and thumbor's `unsafe` on a
    /// server without that dialect's key are unsigned: they pass unless `--require-signature`, which refuses them
    /// like an unsigned native request. With the dialect's key, its signature is verified and `insecure`/`unsafe`
    /// are refused, as imgproxy and thumbor do. Without imgproxy's key any signature segment passes as unsigned
    /// (imgproxy's own behaviour with signing off); a thumbor signature without `--thumbor-key` cannot be checked
    /// and is refused, like a native `sig` on a server without keys.
    pub fn check_dialect(&self, keys: &DialectKeys, signature: &DialectSignature) -> Result<(), SignatureError> {
        let unsigned = if self.required { Err(SignatureError::Missing) } else { Ok(()) };
        let verified = |ok: bool| if ok { Ok(()) } else { Err(SignatureError::Invalid) };
        match signature {
            DialectSignature::None => unsigned,
            DialectSignature::Imgproxy { signature, signed_path } => match &keys.imgproxy {
                Some(key) => verified(key.verifies(signed_path, signature)),
                None => unsigned,
            },
            DialectSignature::Thumbor { signature, signed_path } => match (signature, &keys.thumbor) {
                (Some(signature), Some(key)) => verified(key.verifies(signed_path, signature)),
                (None, Some(_)) | (Some(_), None) => Err(SignatureError::Invalid),
                (None, None) => unsigned,
            },
        }
    }
}

/// Why `mirage sign` could not sign its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInputError {
    /// Neither an absolute URL nor a path starting with `/`.
    #[error("expected a target URL (http://host/a.jpg) or a path (/width=300/?http://host/a.jpg)")]
    Form,
    /// A path that is not `/?{target}` nor `/{options}/?{target}`.
    #[error("a path must be /?{{target}} or /{{options}}/?{{target}}")]
    Path,
    /// The target or the options do not parse.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Signs a target URL or a request path, returning the signed path: `http://h/a.jpg` gives
/// `/sig=S/?http://h/a.jpg` and `/w=300/?http://h/a.jpg` gives `/sig=S,width=300/?http://h/a.jpg`. Options and
/// target are printed canonical, which is exactly what the signature covers; an existing `sig` is replaced.
pub fn sign_path(key: &SigningKey, input: &str) -> Result<String, SignInputError> {
    let input = input.trim();
    // A bare target is the mirror path `/?{target}`: both forms go through the server's own grammar.
    let (path, query) = if input.starts_with('/') {
        input.split_once('?').ok_or(SignInputError::Path)?
    } else if input.contains("://") || input.contains("%3A") || input.contains("%3a") {
        ("/", input)
    } else {
        return Err(SignInputError::Form);
    };
    let request = match parse_route(path, query, None) {
        Ok(Route::Image { request, .. }) => request,
        Ok(Route::Health | Route::NotFound | Route::Dialect(_)) => return Err(SignInputError::Path),
        Err(error) => return Err(error.into()),
    };
    Ok(request.signed_path(&key.sign(&request.signing_message())))
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (RFC 4648 §5).
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64URL[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Decodes unpadded base64url strictly: no padding, no other alphabet, no stray bits. `None` when malformed.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in text.bytes() {
        let value = BASE64URL.iter().position(|&c| c == byte)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero, or two different texts would decode to the same bytes.
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's worked example; the expected value was computed independently with Python's `hmac` module:
    /// `base64.urlsafe_b64encode(hmac.new(bytes.fromhex(KEY), MSG.encode(), hashlib.sha256).digest()).rstrip(b"=")`.
    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const README_MESSAGE: &str =
        "width=300/?http://static.1sapp.com/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";
    const README_SIGNATURE: &str = "PCwKNDc48dmq1Cbqtp2X6dMdR6FZ6xTlW9JK7G6WpHY";

    fn key() -> SigningKey {
        KEY.parse().expect("test key")
    }

    #[test]
    fn signature_matches_an_independent_implementation() {
        assert_eq!(key().sign(README_MESSAGE), README_SIGNATURE);
        assert!(key().verifies(README_MESSAGE, README_SIGNATURE));
    }

    #[test]
    fn sign_path_prints_the_readme_example() {
        let target = "http://static.1sapp.com/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";
        let signed = sign_path(&key(), &format!("/w=300/?{target}")).expect("signs");
        assert_eq!(signed, format!("/sig={README_SIGNATURE},width=300/?{target}"));
    }

    #[test]
    fn base64url_round_trips_and_is_strict() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64url_encode(&bytes);
            assert!(!text.contains(['=', '+', '/']));
            assert_eq!(base64url_decode(&text), Some(bytes));
        }
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(base64url_decode("-_8"), Some(b"\xfb\xff".to_vec()));
        assert_eq!(base64url_decode("-_9"), None, "stray low bits");
        assert_eq!(base64url_decode("+/8"), None, "standard alphabet");
        assert_eq!(base64url_decode("-_8="), None, "padding");
        assert_eq!(base64url_decode("A"), None);
    }

    #[test]
    fn keys_must_be_long_hex_and_hide_in_debug() {
        assert!("abcd".parse::<SigningKey>().is_err());
        assert!("zz".repeat(16).parse::<SigningKey>().is_err());
        assert!(format!("{:?}", key()).contains("32 bytes"));
        assert!(!format!("{:?}", key()).contains("0001"));
    }

    /// What the server makes of `/{options}/?{target}`.
    fn request(options: &str, target: &str) -> (ImageRequest, Option<String>) {
        match parse_route(&format!("/{options}/"), target, None) {
            Ok(Route::Image { request, signature }) => (request, signature),
            other => panic!("{options}: {other:?}"),
        }
    }

    #[test]
    fn policy_accepts_any_key_and_refuses_forgeries() {
        let old: SigningKey = "11".repeat(32).parse().expect("key");
        let policy = SigningPolicy { keys: vec![key(), old.clone()], required: false };
        let (plain, _) = request("w=300", "http://h/a.jpg");
        let by_old = old.sign(&plain.signing_message());
        let (signed, sig) = request(&format!("sig={by_old},w=300"), "http://h/a.jpg");
        assert_eq!(signed, plain);
        assert_eq!(policy.check(&signed, sig.as_deref()), Ok(()));
        assert_eq!(policy.check(&plain, Some("AAAA")), Err(SignatureError::Invalid));
        assert_eq!(policy.check(&plain, None), Ok(()));
        let required = SigningPolicy { required: true, ..policy };
        assert_eq!(required.check(&plain, None), Err(SignatureError::Missing));
        let off = SigningPolicy::default();
        assert_eq!(off.check(&plain, Some(&by_old)), Err(SignatureError::Invalid));
    }

    #[test]
    fn equivalent_spellings_share_one_signature() {
        let (a, _) = request("w=150,dpr=2", "http%3A%2F%2FH%2Fa.jpg");
        let (b, _) = request("sig=x,width=300", "http://h/a.jpg");
        assert_eq!(a.signing_message(), "width=300/?http://h/a.jpg");
        assert_eq!(a.signing_message(), b.signing_message());
        let (mirror, sig) = request("sig=abc", "http://h/a.jpg");
        assert_eq!(mirror.variant, None);
        assert_eq!(sig.as_deref(), Some("abc"));
        assert_eq!(mirror.signing_message(), "/?http://h/a.jpg");
    }

    #[test]
    fn sig_is_only_a_signature() {
        assert!(parse_route("/sig=a,sig=b/", "http://h/a.jpg", None).is_err());
        assert!(parse_route("/sig=/", "http://h/a.jpg", None).is_err());
        assert!(crate::request::TransformOptions::parse("sig=abc,w=1").is_err(), "not a transform option");
    }

    /// imgproxy's "Signing the URL" example (key `secret`, salt `hello`), checked with Python's `hmac`:
    /// `base64.urlsafe_b64encode(hmac.new(key, salt + path, hashlib.sha256).digest()).rstrip(b"=")`.
    #[test]
    fn imgproxy_signatures_match_its_documentation() {
        let key = ImgproxyKey::from_hex("736563726574", "68656C6C6F").expect("hex");
        let path = "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
        assert_eq!(key.sign(path), "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8");
        assert!(key.verifies(path, "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8"));
        assert!(!key.verifies(&path.replace("300", "301"), "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8"));
        assert!(!key.verifies(path, "insecure"));
        assert!(ImgproxyKey::from_hex("", "00").is_err() && ImgproxyKey::from_hex("zz", "00").is_err());
        assert!(!format!("{key:?}").contains("736563726574"));
    }

    /// thumbor's security documentation example (key `MY_SECURE_KEY`), checked with Python's `hmac`:
    /// `base64.urlsafe_b64encode(hmac.new(key, path, hashlib.sha1).digest())`.
    #[test]
    fn thumbor_signatures_match_its_documentation() {
        let key: ThumborKey = "MY_SECURE_KEY".parse().expect("key");
        let path = "300x200/smart/my.server.com/some/path/to/image.jpg";
        assert_eq!(key.sign(path), "OHHMqHwGrH1gubkMMveC8Ireg7A=");
        assert!(key.verifies(path, "OHHMqHwGrH1gubkMMveC8Ireg7A="));
        assert!(!key.verifies("300x201/smart/my.server.com/some/path/to/image.jpg", "OHHMqHwGrH1gubkMMveC8Ireg7A="));
        assert!("".parse::<ThumborKey>().is_err());
    }

    /// The README's Python example, read by the server's own parser and verified end to end.
    #[test]
    fn readme_dialect_examples_verify() {
        use crate::request::{Route, RouteContext, parse_route_in};
        let keys = DialectKeys {
            imgproxy: Some(ImgproxyKey::from_hex("736563726574", "68656C6C6F").expect("hex")),
            thumbor: Some("MY_SECURE_KEY".parse().expect("key")),
        };
        let policy = SigningPolicy { keys: vec![key()], required: true };
        for path in [
            "/HGdQm8vCxGWZeNj2tUToC9mVwByQlJFd8LEZ0FfXAMQ/rs:fill:300:400:0/g:no/aHR0cDovL2V4YW1wbGUuY29tL2ltYWdlcy9jdXJpb3NpdHkuanBn.png",
            "/FQjiRjoVp42Nl25AbGL6IweUUdI=/300x200/my.server.com/some/path/to/image.jpg",
        ] {
            let Ok(Route::Dialect(dialect)) = parse_route_in(&RouteContext::all(None), path, "", None) else {
                panic!("{path} is a dialect request");
            };
            assert_eq!(policy.check_dialect(&keys, &dialect.signature), Ok(()), "{path}");
            let tampered = path.replace("300", "301");
            let Ok(Route::Dialect(dialect)) = parse_route_in(&RouteContext::all(None), &tampered, "", None) else {
                panic!("{tampered} is a dialect request");
            };
            assert_eq!(policy.check_dialect(&keys, &dialect.signature), Err(SignatureError::Invalid), "{tampered}");
        }
    }

    #[test]
    fn dialect_signatures_need_their_own_key() {
        let imgproxy = ImgproxyKey::from_hex("736563726574", "68656C6C6F").expect("hex");
        let thumbor: ThumborKey = "MY_SECURE_KEY".parse().expect("key");
        let keys = DialectKeys { imgproxy: Some(imgproxy.clone()), thumbor: Some(thumbor.clone()) };
        let none = DialectKeys::default();
        let open = SigningPolicy::default();
        let required = SigningPolicy { keys: vec![key()], required: true };
        let path = "/w:300/plain/http://h/a.jpg".to_owned();
        let signed_imgproxy = DialectSignature::Imgproxy { signature: imgproxy.sign(&path), signed_path: path.clone() };
        let insecure = DialectSignature::Imgproxy { signature: "insecure".to_owned(), signed_path: path.clone() };
        assert_eq!(open.check_dialect(&keys, &signed_imgproxy), Ok(()));
        assert_eq!(required.check_dialect(&keys, &signed_imgproxy), Ok(()));
        assert_eq!(open.check_dialect(&keys, &insecure), Err(SignatureError::Invalid));
        assert_eq!(open.check_dialect(&none, &insecure), Ok(()));
        assert_eq!(required.check_dialect(&none, &insecure), Err(SignatureError::Missing));
        assert_eq!(required.check_dialect(&none, &signed_imgproxy), Err(SignatureError::Missing));
        let thumbor_path = "300x200/h/a.jpg".to_owned();
        let signed_thumbor = DialectSignature::Thumbor {
            signature: Some(thumbor.sign(&thumbor_path)),
            signed_path: thumbor_path.clone(),
        };
        let unsafe_thumbor = DialectSignature::Thumbor { signature: None, signed_path: thumbor_path.clone() };
        assert_eq!(required.check_dialect(&keys, &signed_thumbor), Ok(()));
        assert_eq!(open.check_dialect(&none, &signed_thumbor), Err(SignatureError::Invalid));
        assert_eq!(open.check_dialect(&keys, &unsafe_thumbor), Err(SignatureError::Invalid));
        assert_eq!(open.check_dialect(&none, &unsafe_thumbor), Ok(()));
        assert_eq!(required.check_dialect(&none, &unsafe_thumbor), Err(SignatureError::Missing));
        assert_eq!(required.check_dialect(&keys, &DialectSignature::None), Err(SignatureError::Missing));
        assert_eq!(open.check_dialect(&keys, &DialectSignature::None), Ok(()));
        // One dialect's signature in the other's slot never verifies: imgproxy's HMAC as a thumbor signature.
        let crossed =
            DialectSignature::Thumbor { signature: Some(imgproxy.sign(&thumbor_path)), signed_path: thumbor_path };
        assert_eq!(open.check_dialect(&keys, &crossed), Err(SignatureError::Invalid));
    }

    #[test]
    fn sign_path_forms() {
        let k = key();
        let mirror = sign_path(&k, "http://h/a.jpg").expect("signs");
        assert_eq!(mirror, format!("/sig={}/?http://h/a.jpg", k.sign("/?http://h/a.jpg")));
        assert_eq!(sign_path(&k, "/?http://h/a.jpg"), Ok(mirror.clone()));
        assert_eq!(sign_path(&k, "/format=original/?http://h/a.jpg"), Ok(mirror.clone()));
        let resigned = sign_path(&k, "/sig=old,w=300/?http://h/a.jpg").expect("re-signs");
        assert_eq!(resigned, format!("/sig={},width=300/?http://h/a.jpg", k.sign("width=300/?http://h/a.jpg")));
        assert_eq!(sign_path(&k, "h/a.jpg"), Err(SignInputError::Form));
        assert_eq!(sign_path(&k, "/w=300/x/?http://h/a.jpg"), Err(SignInputError::Path));
        assert_eq!(sign_path(&k, "/w=300/"), Err(SignInputError::Path));
        assert_eq!(sign_path(&k, "/healthz?http://h/a.jpg"), Err(SignInputError::Path));
        assert_eq!(sign_path(&k, "/w%3D300/?http://h/a.jpg"), sign_path(&k, "/w=300/?http://h/a.jpg"));
        assert!(matches!(sign_path(&k, "/w=huge/?http://h/a.jpg"), Err(SignInputError::Request(_))));
    }
}
