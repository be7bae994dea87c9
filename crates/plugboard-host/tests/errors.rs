//! Start errors: the worker's stderr they carry is bounded and printable.

use plugboard_host::HostError;

/// 12 KB of the kind of stderr a crashing worker prints: colours, cursor
/// moves, a window-title OSC, progress bars redrawn with `\r`, a bell.
fn noisy_stderr() -> Vec<String> {
    let mut lines: Vec<String> = (0..250)
        .map(|i| format!("\u{1b}[1;31mERROR\u{1b}[0m line {i:03}: \u{1b}]0;title\u{7}loading\u{1b}[2K shard\t{i}\u{7}"))
        .collect();
    lines.push("10%\r50%\r\u{1b}[32m100%\u{1b}[0m".into());
    lines.push("\u{1b}[31mCUDA out of memory\u{1b}[0m\u{1b}(B".into());
    lines
}

#[test]
fn start_errors_bound_and_clean_the_worker_stderr_defect_13() {
    let stderr_tail = noisy_stderr();
    assert!(stderr_tail.iter().map(String::len).sum::<usize>() > 12_000);
    let errors = [
        HostError::ExitedBeforeReady {
            plugin: "stt_whisper".into(),
            exit: "exit code 1".into(),
            stderr_tail: stderr_tail.clone(),
        },
        HostError::ReadyTimeout {
            plugin: "stt_whisper".into(),
            secs: 30.0,
            probe: "protocol".into(),
            last_error: None,
            stderr_tail,
        },
    ];
    for err in errors {
        let text = err.to_string();
        assert!(text.len() <= 2048 + 200, "{} bytes: {text}", text.len());
        assert!(!text.chars().any(char::is_control), "control characters left: {text:?}");
        assert!(
            !text.contains("[0m") && !text.contains("title"),
            "escape remains: {text:?}"
        );
        assert!(text.ends_with("100% | CUDA out of memory"), "{text}");
        assert!(text.contains("line 249: loading shard 249"), "{text}");
        assert!(!text.contains("line 000"), "the oldest lines go first: {text}");
        assert!(text.contains("(last "), "says lines were left out: {text}");
    }
}

#[test]
fn one_huge_stderr_line_keeps_its_end_defect_13() {
    let line = format!("{}THE END", "é".repeat(10_000));
    let err = HostError::ExitedBeforeReady {
        plugin: "p".into(),
        exit: "signal 9".into(),
        stderr_tail: vec![line],
    };
    let text = err.to_string();
    assert!(text.len() <= 2048 + 200, "{}", text.len());
    assert!(text.ends_with("THE END"), "{text}");
}

#[test]
fn short_stderr_is_shown_whole() {
    let err = HostError::ExitedBeforeReady {
        plugin: "p".into(),
        exit: "exit code 1".into(),
        stderr_tail: vec!["loading model".into(), "CUDA out of memory".into()],
    };
    assert_eq!(
        err.to_string(),
        "plugin p exited before it was ready (exit code 1); stderr: loading model | CUDA out of memory"
    );
}
