//! Pumping a resource's output into the plugin's rotating log, keeping a
//! bounded, cleaned tail of stderr for error messages and watching for a
//! readiness line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::watch;

use super::lock;
use crate::logs::RotatingLog;

/// Lines of stderr kept for error messages.
pub const STDERR_TAIL_LINES: usize = 20;
/// Characters kept of each of those lines.
pub const STDERR_TAIL_LINE_CHARS: usize = 200;
const MAX_LINE: usize = 64 * 1024;

/// A line as it may appear in an error message: terminal escape sequences
/// and other control characters removed, at most
/// [`STDERR_TAIL_LINE_CHARS`] characters.
pub fn clean_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(STDERR_TAIL_LINE_CHARS));
    let mut chars = line.chars().peekable();
    let mut n = 0;
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte; other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        if c.is_control() {
            continue;
        }
        if n == STDERR_TAIL_LINE_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
        n += 1;
    }
    out
}

pub(super) async fn pump<R: AsyncRead + Unpin>(
    stream: R,
    tag: &'static str,
    log: Arc<Mutex<RotatingLog>>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    ready: Option<regex::Regex>,
    ready_tx: watch::Sender<bool>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if let Err(e) = lock(&log).write_line(&format!("{tag}| {line}")) {
            tracing::warn!(error = %e, "cannot write plugin log");
        }
        if let Some(t) = &tail {
            let mut t = lock(t);
            if t.len() == STDERR_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(clean_line(line));
        }
        if let Some(re) = &ready
            && re.is_match(line)
        {
            let _ = ready_tx.send(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_removed_and_lines_bounded() {
        assert_eq!(clean_line("\u{1b}[31mred\u{1b}[0m text\u{7}\r"), "red text");
        assert_eq!(clean_line("a\u{1b}]b"), "ab");
        let long = "x".repeat(5000);
        let c = clean_line(&long);
        assert_eq!(c.chars().count(), STDERR_TAIL_LINE_CHARS + 1);
    }
}
