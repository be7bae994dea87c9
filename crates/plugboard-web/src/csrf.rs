//! Cross-site request forgery defences: tokens the server signed, and the
//! same-origin check on every request that changes state.
//!
//! A token is 16 random bytes and an HMAC-SHA-256 tag over them, keyed
//! with 32 random bytes drawn once per process, both in hex (64
//! characters). A token the server did not issue (a cookie planted by a page
//! on another local port, say) does not verify, and tokens die with the
//! process. The dashboard sends its token in a `SameSite=Strict` cookie and
//! in every form; a POST needs both, equal, and signed.
//!
//! Independently, a request that changes state (anything but GET, HEAD,
//! OPTIONS) whose `Origin` names another origin than the `Host` it was sent
//! to is refused; without `Origin`, the `Referer`'s origin is checked the
//! same way; with neither, the request must stand on its own (a signed CSRF
//! token for dashboard forms; a JSON body, which a cross-site form cannot
//! send, for the API).

use std::sync::OnceLock;

use axum::http::{HeaderMap, Method, header};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::api::constant_time_eq;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA-256 of `msg` under `key` (RustCrypto's `hmac` and `sha2`).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // No OS randomness (nothing else would work either): derive bytes
        // from what differs between processes and calls, never a constant.
        let seed = format!(
            "{:?} {} {:p} {:?}",
            std::time::SystemTime::now(),
            std::process::id(),
            buf.as_ptr(),
            std::thread::current().id()
        );
        let d: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = d[i % 32];
        }
    }
}

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        random(&mut k);
        k
    })
}

const DOMAIN: &[u8] = b"plugboard csrf v1:";

fn tag(nonce: &[u8]) -> [u8; 32] {
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(nonce);
    hmac_sha256(key(), &msg)
}

/// A fresh token signed with this process's key.
pub fn issue() -> String {
    let mut nonce = [0u8; 16];
    random(&mut nonce);
    format!("{}{}", hex(&nonce), hex(&tag(&nonce)[..16]))
}

/// True when `token` was issued by this process.
pub fn verify(token: &str) -> bool {
    if token.len() != 64 {
        return false;
    }
    let (Some(nonce), Some(given)) = (unhex(&token[..32]), unhex(&token[32..])) else {
        return false;
    };
    constant_time_eq(&tag(&nonce)[..16], &given)
}

/// True for methods that change state (everything but GET, HEAD, OPTIONS).
pub fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `scheme://host[:port]` of an origin or URL, lower-cased, default port
/// dropped; `None` when it is not an http(s) URL (`null` included).
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    let authority = authority.rsplit('@').next()?.to_owned();
    let default = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = authority.strip_suffix(default).unwrap_or(&authority).to_owned();
    (!authority.is_empty()).then_some(authority)
}

/// Why a request's `Origin` (or, without one, `Referer`) is foreign to the
/// `Host` it was sent to; `None` when it is the same origin or neither
/// header is present.
pub fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let text = |h| {
        headers
            .get(h)
            .map(|v| v.to_str().unwrap_or("\u{fffd}").trim().to_owned())
    };
    let (what, given) = match (text(header::ORIGIN), text(header::REFERER)) {
        (Some(o), _) => ("Origin", o),
        (None, Some(r)) => ("Referer", r),
        (None, None) => return None,
    };
    let host = text(header::HOST).unwrap_or_default().to_ascii_lowercase();
    let host = host
        .strip_suffix(":80")
        .filter(|_| given.starts_with("http:"))
        .or_else(|| host.strip_suffix(":443").filter(|_| given.starts_with("https:")))
        .unwrap_or(&host)
        .to_owned();
    match origin_of(&given) {
        Some(o) if !host.is_empty() && o == host => None,
        _ => Some(format!(
            "refusing a cross-origin request: {what} {given:?} is not this server ({host:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_standard_vectors() {
        // RFC 4231, test cases 2 and 6 (a key longer than a block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn only_issued_tokens_verify() {
        let t = issue();
        assert!(verify(&t));
        assert_ne!(t, issue());
        assert!(!verify("abc"));
        assert!(!verify(&"0".repeat(64)));
        let mut forged = t.clone().into_bytes();
        forged[63] = if forged[63] == b'0' { b'1' } else { b'0' };
        assert!(!verify(&String::from_utf8(forged).unwrap()));
        assert!(!verify(&format!("{}é", &t[..62])));
    }

    #[test]
    fn origins_are_compared_with_the_host() {
        let h = |pairs: &[(header::HeaderName, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(k.clone(), v.parse().unwrap());
            }
            m
        };
        let host = (header::HOST, "127.0.0.1:7878");
        assert!(foreign_origin(&h(std::slice::from_ref(&host))).is_none());
        assert!(foreign_origin(&h(&[host.clone(), (header::ORIGIN, "http://127.0.0.1:7878")])).is_none());
        assert!(foreign_origin(&h(&[host.clone(), (header::ORIGIN, "http://evil.com")])).is_some());
        assert!(foreign_origin(&h(&[host.clone(), (header::ORIGIN, "http://127.0.0.1:9999")])).is_some());
        assert!(foreign_origin(&h(&[host.clone(), (header::ORIGIN, "null")])).is_some());
        assert!(foreign_origin(&h(&[host.clone(), (header::REFERER, "http://127.0.0.1:7878/running")])).is_none());
        assert!(foreign_origin(&h(&[host, (header::REFERER, "http://localhost:7878/")])).is_some());
        assert!(
            foreign_origin(&h(&[
                (header::HOST, "localhost:80"),
                (header::ORIGIN, "http://localhost")
            ]))
            .is_none()
        );
    }
}
