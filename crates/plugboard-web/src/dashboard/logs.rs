//! A plugin's log on the dashboard: the tail (a fragment for htmx, a page
//! without it), a download, and a follow as server-sent events.
//!
//! The host writes each line of a worker's output prefixed with its stream,
//! `out| …` for stdout and `err| …` for stderr ([`plugboard_host::logs`]);
//! the filter keeps one stream. Following reads the open log file from where the last read ended and
//! goes on with the new file when the log rotates (as `tail -F` does).

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{UntilShutdown, fragment, host_error, page};
use crate::api::ApiState;

/// Lines the page shows at first and a follow starts with.
pub const RECENT_LINES: usize = 200;
/// Lines a download holds at most (the log rotates at 8 MiB anyway).
pub const DOWNLOAD_LINES: usize = 200_000;
/// How often a follow looks for new lines.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes a follow reads per look at most; the rest comes with the next.
const FOLLOW_READ_BYTES: u64 = 1024 * 1024;
/// Bytes read from the end of the file for the first lines of a follow.
const RECENT_BYTES: u64 = 256 * 1024;

/// Which of a worker's streams to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StreamFilter {
    /// Both.
    #[default]
    All,
    /// Standard output only.
    Stdout,
    /// Standard error only.
    Stderr,
}

impl StreamFilter {
    /// True when `line` (as logged: `out| …` or `err| …`) passes.
    pub fn keeps(self, line: &str) -> bool {
        match self {
            StreamFilter::All => true,
            StreamFilter::Stdout => line.starts_with("out|"),
            StreamFilter::Stderr => line.starts_with("err|"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            StreamFilter::All => "all",
            StreamFilter::Stdout => "stdout",
            StreamFilter::Stderr => "stderr",
        }
    }
}

/// The stream a logged line came from (`stdout`, `stderr`, or `host`).
fn stream_of(line: &str) -> &'static str {
    if line.starts_with("out|") {
        "stdout"
    } else if line.starts_with("err|") {
        "stderr"
    } else {
        "host"
    }
}

/// One log line as the page shows it (text only, escaped by the template).
pub fn line(l: &str) -> Markup {
    html! { span.ln data-stream=(stream_of(l)) { (l) "\n" } }
}

/// The last [`RECENT_LINES`] lines of plugin `id`'s log (none when it has none).
pub fn recent(s: &ApiState, id: &str) -> Vec<String> {
    let path = s.host.config().data.log_path(id);
    plugboard_host::logs::tail(&path, RECENT_LINES).unwrap_or_default()
}

/// The log section of the plugin page.
pub fn panel(id: &str, lines: &[String]) -> Markup {
    html! {
        section.card.logs id="logs" {
            div.section-head {
                h2 { "Log" }
                div.actions {
                    label for="log-filter" { "Show" }
                    select id="log-filter" {
                        option value="all" { "stdout and stderr" }
                        option value="stdout" { "stdout" }
                        option value="stderr" { "stderr" }
                    }
                    span.muted id="log-follow" { "" }
                    a.button id="log-download" href={ "/plugins/" (id) "/logs/download" } download { "Download" }
                    // Without scripts: the same filter as plain links.
                    noscript {
                        a href={ "/plugins/" (id) "/logs?stream=stdout" } { "stdout only" } " · "
                        a href={ "/plugins/" (id) "/logs?stream=stderr" } { "stderr only" }
                    }
                }
            }
            pre.log.follow id="plugin-log" data-filter="all" data-follow={ "/events/plugins/" (id) "/logs" } {
                @for l in lines { (line(l)) }
                @if lines.is_empty() { span.ln.empty data-stream="host" { "(empty)\n" } }
            }
        }
    }
}

/// Query of the tail and the download.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// Lines wanted (tail: default 50, at most 2000).
    pub lines: Option<usize>,
    /// Which stream.
    #[serde(default)]
    pub stream: StreamFilter,
}

fn filtered(s: &ApiState, id: &str, n: usize, f: StreamFilter) -> std::io::Result<Vec<String>> {
    let path = s.host.config().data.log_path(id);
    // Read more than asked when filtering, so a filtered tail is not empty
    // just because the other stream was busier.
    let read = if f == StreamFilter::All {
        n
    } else {
        n.saturating_mul(10)
    };
    let mut lines = plugboard_host::logs::tail(&path, read)?;
    lines.retain(|l| f.keeps(l));
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

/// `GET /plugins/{id}/logs?lines=N&stream=stdout|stderr`: the tail as a
/// fragment for htmx (`HX-Request`), else as a page.
pub async fn tail(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = s.host.manifest(&id) {
        return host_error(e);
    }
    let lines = filtered(&s, &id, q.lines.unwrap_or(50).min(2000), q.stream).unwrap_or_default();
    if headers.contains_key("hx-request") {
        return fragment(super::pages::log_tail(&id, &lines));
    }
    page(&headers, &format!("Log of {id}"), "running", |_| {
        html! {
            h1 { "Log of " code { (id) } }
            p.actions {
                a href={ "/plugins/" (id) } { "Back to the plugin" }
                " · " a href={ "/plugins/" (id) "/logs" } { "both streams" }
                " · " a href={ "/plugins/" (id) "/logs?stream=stdout" } { "stdout" }
                " · " a href={ "/plugins/" (id) "/logs?stream=stderr" } { "stderr" }
                " · " a href={ "/plugins/" (id) "/logs/download?stream=" (q.stream.as_str()) } { "download" }
            }
            pre id="log" class="log" data-plugin=(id) { @for l in &lines { (line(l)) } @if lines.is_empty() { "(empty)" } }
        }
    })
}

/// `GET /plugins/{id}/logs/download?stream=…`: the log as a text file.
pub async fn download(State(s): State<ApiState>, Path(id): Path<String>, Query(q): Query<LogQuery>) -> Response {
    if let Err(e) = s.host.manifest(&id) {
        return host_error(e);
    }
    let lines = match filtered(&s, &id, DOWNLOAD_LINES, q.stream) {
        Ok(l) => l,
        Err(e) => {
            return super::error(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the log of {id}: {e}"),
            );
        }
    };
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    // Plugin ids are letters, digits, '_', '-' and '.', safe in the header.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{id}.log\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// Reads a log file as it grows, across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// A follower of `path`, and the last `n` complete lines there now.
    pub fn open(path: PathBuf, n: usize) -> (Follower, Vec<String>) {
        let mut f = Follower {
            path,
            file: None,
            ino: 0,
            pos: 0,
            partial: Vec::new(),
        };
        let mut lines = Vec::new();
        if let Ok(mut file) = File::open(&f.path)
            && let Ok(meta) = file.metadata()
        {
            let len = meta.len();
            let from = len.saturating_sub(RECENT_BYTES);
            let mut buf = Vec::new();
            if file.seek(SeekFrom::Start(from)).is_ok() && (&mut file).take(len - from).read_to_end(&mut buf).is_ok() {
                let text = String::from_utf8_lossy(&buf);
                let mut all: Vec<&str> = text.split('\n').collect();
                // A trailing piece with no newline is kept for the next read.
                let last = all.pop().unwrap_or("");
                f.partial = last.as_bytes().to_vec();
                if from > 0 && !all.is_empty() {
                    all.remove(0); // started mid-line
                }
                let skip = all.len().saturating_sub(n);
                lines = all[skip..].iter().map(|l| (*l).to_owned()).collect();
                f.pos = from + buf.len() as u64;
            }
            f.ino = meta.ino();
            f.file = Some(file);
        }
        (f, lines)
    }

    /// The complete lines written since the last call.
    pub fn poll(&mut self) -> Vec<String> {
        let mut out = self.read_more();
        // Rotated (or created): finish the old file, then follow the new one.
        let now = std::fs::metadata(&self.path).ok();
        let replaced = match (&now, &self.file) {
            (Some(m), Some(_)) => m.ino() != self.ino || m.len() < self.pos,
            (Some(_), None) => true,
            _ => false,
        };
        if replaced && let Ok(file) = File::open(&self.path) {
            if !self.partial.is_empty() {
                out.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
            }
            self.ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
            self.file = Some(file);
            self.pos = 0;
            out.extend(self.read_more());
        }
        out
    }

    fn read_more(&mut self) -> Vec<String> {
        let Some(file) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(self.pos)).is_err() || file.take(FOLLOW_READ_BYTES).read_to_end(&mut buf).is_err()
        {
            return Vec::new();
        }
        self.pos += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&done[..end])
            .split('\n')
            .map(str::to_owned)
            .collect()
    }
}

/// `GET /events/plugins/{id}/logs`: the log as server-sent events: `reset`
/// with the last [`RECENT_LINES`] lines, then `lines` with each batch of new
/// ones, as JSON arrays of strings (the page inserts them as text).
pub async fn follow(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    if let Err(e) = s.host.manifest(&id) {
        return host_error(e);
    }
    let path = s.host.config().data.log_path(&id);
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        let Ok((mut follower, first)) = tokio::task::spawn_blocking(move || Follower::open(path, RECENT_LINES)).await
        else {
            return;
        };
        let reset = Event::default().event("reset").json_data(&first);
        if let Ok(ev) = reset
            && tx.send(Ok(ev)).await.is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
            let Ok((f, lines)) = tokio::task::spawn_blocking(move || {
                let lines = follower.poll();
                (follower, lines)
            })
            .await
            else {
                return;
            };
            follower = f;
            if lines.is_empty() {
                continue;
            }
            let Ok(ev) = Event::default().event("lines").json_data(&lines) else {
                continue;
            };
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Sse::new(UntilShutdown::new(stream, s.shutdown.clone()))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_follower_sees_new_lines_partial_lines_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        std::fs::write(&path, "out| one\nerr| two\nout| par").unwrap();
        let (mut f, first) = Follower::open(path.clone(), 1);
        assert_eq!(first, vec!["err| two"]);
        assert!(f.poll().is_empty());
        let mut w = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        w.write_all(b"tial\nout| three\n").unwrap();
        assert_eq!(f.poll(), vec!["out| partial", "out| three"]);
        // Rotation: the old file moves away, a new one starts.
        w.write_all(b"out| last of old\n").unwrap();
        std::fs::rename(&path, dir.path().join("p.log.1")).unwrap();
        std::fs::write(&path, "out| first of new\n").unwrap();
        assert_eq!(f.poll(), vec!["out| last of old", "out| first of new"]);
        assert!(f.poll().is_empty());
    }

    #[test]
    fn a_follower_of_a_missing_log_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let (mut f, first) = Follower::open(path.clone(), 10);
        assert!(first.is_empty());
        assert!(f.poll().is_empty());
        std::fs::write(&path, "err| hello\n").unwrap();
        assert_eq!(f.poll(), vec!["err| hello"]);
    }

    #[test]
    fn the_filter_keeps_one_stream() {
        assert!(StreamFilter::Stdout.keeps("out| a"));
        assert!(!StreamFilter::Stdout.keeps("err| a"));
        assert!(StreamFilter::Stderr.keeps("err| a"));
        assert!(StreamFilter::All.keeps("anything"));
    }
}
