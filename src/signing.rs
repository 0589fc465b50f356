//! Signed URLs: HMAC-SHA256 over a request's canonical form, so that only holders of a key can mint links.
//!
//! The signed message is `{canonical options}/?{canonical target}` (see [`ImageRequest::signing_message`]); the
//! signature is its HMAC-SHA256 under the key, in unpadded base64url, carried as `sig=` in the options segment.
//! Verification is constant-time (`hmac`'s `verify_slice`) and any configured key may verify (rotation).

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::request::{ImageRequest, RequestError, Route, parse_route};

type HmacSha256 = Hmac<Sha256>;

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
        Ok(Route::Health | Route::NotFound) => return Err(SignInputError::Path),
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
