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

use crate::api::constant_time_eq;

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// SHA-256 (FIPS 180-4) of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ];
    let bits = (data.len() as u64).wrapping_mul(8);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// HMAC-SHA-256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha256(&inner));
    sha256(&outer)
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
        let d = sha256(seed.as_bytes());
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
    fn sha256_and_hmac_match_the_standard_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
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
