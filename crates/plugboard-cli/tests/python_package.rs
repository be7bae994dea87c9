//! Builds the Python package `plugboard` (python/: a PyO3 extension over
//! plugboard-core, built with maturin) into a virtual environment and runs
//! its pytest suite, so that the README's one test command covers it. The
//! suite's client tests drive this crate's `plugboard` binary as a real host.
//!
//! The virtual environment lives in the target dir (`plugboard-py-venv`,
//! with the system site packages visible, where `.ci/run` installs maturin
//! and pytest); the extension is built once and rebuilt only when its
//! sources change. When `PLUGBOARD_PYTEST_SUMMARY` names a file, pytest's
//! counts are written there (`N passed, N failed, N skipped`) for `.ci/run`
//! to add to its closing line. Under CI nothing is skipped: a missing tool
//! or a skipped pytest test fails this test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The target dir this test binary was built into (`…/target/debug/deps/x`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lies in target/<profile>/deps")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Skips (outside CI) or fails (under CI) with `why`.
fn unavailable(why: &str) {
    assert!(!in_ci(), "{why} (required under CI)");
    eprintln!("SKIP: {why}; the Python package's tests are not run");
}

/// The counts of pytest's last summary line ("3 failed, 70 passed, 1 skipped in 2.1s").
fn counts(out: &str) -> (u64, u64, u64) {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && (l.contains("passed") || l.contains("failed") || l.contains("error")))
        .unwrap_or("");
    let mut c = (0, 0, 0);
    let words: Vec<&str> = line
        .split(|ch: char| ch == ',' || ch.is_whitespace() || ch == '=')
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        let Ok(n) = pair[0].parse::<u64>() else { continue };
        match pair[1] {
            "passed" => c.0 += n,
            "failed" | "error" | "errors" => c.1 += n,
            "skipped" => c.2 += n,
            _ => {}
        }
    }
    c
}

#[test]
fn python_package_pytest_suite_passes() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let package = repo.join("python");
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        return unavailable("python3 not found");
    }
    let target = target_dir();
    let venv = target.join("plugboard-py-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        let o = run(Command::new("python3")
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&venv));
        assert!(o.status.success(), "cannot create {}: {}", venv.display(), text(&o));
    }
    // The venv's bin first: maturin and pytest come from it or, through the
    // system site packages, from the system (where .ci/run installs them).
    let path = std::env::join_paths(
        std::iter::once(venv.join("bin")).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH entries join");
    let has_tools = || {
        let maturin = Command::new("maturin")
            .arg("--version")
            .env("PATH", &path)
            .output()
            .is_ok_and(|o| o.status.success());
        maturin
            && Command::new(&py)
                .args(["-c", "import pytest"])
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if !has_tools() {
        let o = run(Command::new(&py).args(["-m", "pip", "install", "--quiet", "maturin", "pytest"]));
        if !o.status.success() || !has_tools() {
            return unavailable(&format!(
                "maturin and pytest are not installed and pip could not install them: {}",
                text(&o)
            ));
        }
    }
    let built = run(Command::new("maturin")
        .args(["develop", "--quiet", "--locked", "--manifest-path"])
        .arg(package.join("Cargo.toml"))
        .env("VIRTUAL_ENV", &venv)
        .env("PATH", &path)
        .env("CARGO_TARGET_DIR", &target));
    assert!(built.status.success(), "maturin develop failed:\n{}", text(&built));

    let tests = run(Command::new(&py)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"])
        .arg(package.join("tests"))
        .current_dir(&package)
        .env("VIRTUAL_ENV", &venv)
        .env("PATH", &path)
        .env("PLUGBOARD_EXE", env!("CARGO_BIN_EXE_plugboard"))
        .env("CARGO_TARGET_DIR", &target));
    let out = text(&tests);
    let (passed, failed, skipped) = counts(&out);
    if let Some(file) = std::env::var_os("PLUGBOARD_PYTEST_SUMMARY") {
        let summary = format!("{passed} passed, {failed} failed, {skipped} skipped\n");
        std::fs::write(&file, summary).expect("the pytest summary file is writable");
    }
    assert!(
        tests.status.success() && failed == 0,
        "the Python package's tests failed:\n{out}"
    );
    assert!(passed > 0, "pytest ran no test:\n{out}");
    assert!(!in_ci() || skipped == 0, "tests were skipped under CI:\n{out}");
}

#[test]
fn pytest_summary_lines_are_counted() {
    assert_eq!(counts("....\n73 passed in 0.66s\n"), (73, 0, 0));
    assert_eq!(counts("x\n2 failed, 70 passed, 1 skipped in 2.10s\n"), (70, 2, 1));
    assert_eq!(counts("== 1 error, 3 passed in 1s =="), (3, 1, 0));
    assert_eq!(counts("nothing"), (0, 0, 0));
}
