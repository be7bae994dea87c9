//! Human and JSON output: aligned tables, colour only on a terminal (never
//! with NO_COLOR), spinners on waits only when stderr is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

/// True when colour may be used on stdout.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Colours a state word when colour is on.
pub fn state(s: &str) -> String {
    if !colour() {
        return s.to_owned();
    }
    let code = match s {
        "running" => "32",
        "starting" | "stopping" => "33",
        "crashed" | "failed" => "31",
        _ => "2",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_esc = false;
    for c in s.chars() {
        if in_esc {
            if c == 'm' {
                in_esc = false;
            }
        } else if c == '\x1b' {
            in_esc = true;
        } else {
            n += 1;
        }
    }
    n
}

/// Prints rows as a table with a header, columns aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(visible_len(c));
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - visible_len(c) + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    if colour() {
        println!("\x1b[1m{}\x1b[0m", {
            let mut s = String::new();
            for (i, h) in head.iter().enumerate() {
                s.push_str(h);
                if i + 1 < head.len() {
                    s.push_str(&" ".repeat(widths[i] - h.len() + 2));
                }
            }
            s.trim_end().to_owned()
        });
    } else {
        line(head);
    }
    for r in rows {
        line(r.clone());
    }
}

/// Prints a value as pretty JSON.
pub fn json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot serialize output: {e}"),
    }
}

/// A spinner on stderr while waiting (nothing when stderr is not a terminal).
pub fn spinner(msg: impl Into<String>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.into());
    pb.enable_steady_tick(Duration::from_millis(100));
    Some(pb)
}

pub use plugboard_web::dashboard::human_duration;
