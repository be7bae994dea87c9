//! What a worker writes on its notification descriptor
//! (`PLUGBOARD_NOTIFY_FD`), read line by line.
//!
//! The SDKs write their manifest first (`MANIFEST=` and the JSON of
//! `GET /v1/manifest` on one line), then `READY=1`, in one write of at most
//! `PIPE_BUF` bytes (so it never blocks). A process worker's host then
//! checks that the worker is the plugin its plugin.toml describes without a
//! round trip of its own, the first connection being the first real
//! request. Workers that write only `READY=1` (older SDKs, a manifest too
//! large for one atomic write, any program using `ready = "notify"`) are
//! checked over the protocol as before, and so are remote ones, whose
//! forward that request proves.

use std::sync::Arc;

use plugboard_protocol::WorkerManifest;

/// The prefix of the line carrying the worker's manifest.
pub const MANIFEST_PREFIX: &[u8] = plugboard_protocol::NOTIFY_MANIFEST_PREFIX.as_bytes();

/// The longest notification line read; a longer manifest line is dropped
/// (the host then asks the worker for its manifest instead).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What the worker has said so far.
#[derive(Debug, Clone, Default)]
pub struct Notice {
    /// True once the worker said it serves.
    pub ready: bool,
    /// The manifest it sent before that, if any (and if it parsed).
    pub manifest: Option<Arc<WorkerManifest>>,
}

/// One notification line, classified.
#[derive(Debug)]
pub enum Line {
    /// `MANIFEST=…` that parsed.
    Manifest(Box<WorkerManifest>),
    /// `MANIFEST=…` that did not parse, with why.
    BadManifest(String),
    /// `READY=1`.
    Ready,
    /// Anything else.
    Other,
}

/// Classifies one line (trailing whitespace, the newline included, is
/// ignored).
pub fn parse_line(line: &[u8]) -> Line {
    let line = line.trim_ascii_end();
    if let Some(json) = line.strip_prefix(MANIFEST_PREFIX) {
        return match serde_json::from_slice::<WorkerManifest>(json) {
            Ok(m) => Line::Manifest(Box::new(m)),
            Err(e) => Line::BadManifest(e.to_string()),
        };
    }
    if line == b"READY=1" { Line::Ready } else { Line::Other }
}

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`]; a longer
/// line is reported once as [`Chunk::TooLong`] and the rest of it skipped.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    skipping: bool,
}

/// What [`LineSplitter::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// A complete line, newline included.
    Line(Vec<u8>),
    /// A line longer than the limit began (and is being skipped).
    TooLong,
}

impl LineSplitter {
    /// Feeds `bytes`; returns the complete lines (and overlong-line reports)
    /// they finish, in order.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Chunk> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|b| *b == b'\n');
            let (part, rest) = match newline {
                Some(i) => (&bytes[..=i], &bytes[i + 1..]),
                None => (bytes, &[][..]),
            };
            bytes = rest;
            if self.skipping {
                if newline.is_some() {
                    self.skipping = false;
                }
                continue;
            }
            if self.buf.len() + part.len() > MAX_LINE_BYTES {
                self.buf.clear();
                out.push(Chunk::TooLong);
                self.skipping = newline.is_none();
                continue;
            }
            self.buf.extend_from_slice(part);
            if newline.is_some() {
                out.push(Chunk::Line(std::mem::take(&mut self.buf)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        let m = br#"MANIFEST={"protocol_version":1,"name":"echo","version":"1.0","config_schema":{"type":"object"}}"#;
        match parse_line(&[m.as_slice(), b"\n"].concat()) {
            Line::Manifest(m) => {
                assert_eq!(m.name, "echo");
                assert_eq!(m.version.as_deref(), Some("1.0"));
            }
            other => panic!("expected a manifest, got {other:?}"),
        }
        assert!(matches!(parse_line(b"READY=1\n"), Line::Ready));
        assert!(matches!(parse_line(b"READY=1\r\n"), Line::Ready));
        assert!(matches!(parse_line(b"READY=1"), Line::Ready));
        assert!(matches!(parse_line(b"READY=1 \t\n"), Line::Ready));
        assert!(matches!(parse_line(b"STATUS=warming up\n"), Line::Other));
        match parse_line(b"MANIFEST={\"name\":\n") {
            Line::BadManifest(why) => assert!(why.contains("EOF"), "{why}"),
            other => panic!("expected a bad manifest, got {other:?}"),
        }
        // A manifest without its required fields is refused, not guessed.
        assert!(matches!(parse_line(b"MANIFEST={}\n"), Line::BadManifest(_)));
    }

    #[test]
    fn lines_are_split_across_reads_and_kept_together_within_one() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"MANI"), vec![]);
        assert_eq!(
            s.push(b"FEST={}\nREADY=1\nrest"),
            vec![
                Chunk::Line(b"MANIFEST={}\n".to_vec()),
                Chunk::Line(b"READY=1\n".to_vec())
            ]
        );
        assert_eq!(s.push(b"\n"), vec![Chunk::Line(b"rest\n".to_vec())]);
    }

    #[test]
    fn an_overlong_line_is_reported_once_and_skipped() {
        let mut s = LineSplitter::default();
        let big = vec![b'x'; MAX_LINE_BYTES / 2 + 1];
        assert_eq!(s.push(&big), vec![]);
        assert_eq!(s.push(&big), vec![Chunk::TooLong]);
        assert_eq!(s.push(&big), vec![]);
        assert_eq!(
            s.push(b"tail of it\nREADY=1\n"),
            vec![Chunk::Line(b"READY=1\n".to_vec())]
        );
        // An overlong line that ends in the same read.
        let mut s = LineSplitter::default();
        let mut one = vec![b'y'; MAX_LINE_BYTES + 5];
        one.extend_from_slice(b"\nREADY=1\n");
        assert_eq!(s.push(&one), vec![Chunk::TooLong, Chunk::Line(b"READY=1\n".to_vec())]);
    }
}
