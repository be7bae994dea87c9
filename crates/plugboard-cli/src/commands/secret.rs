//! `plugboard secret set|list|delete`: provider keys in the data dir's
//! secret store (`secrets.json`, mode 0600), where backends look after the
//! environment. A value is read from stdin only — never from the command
//! line, where it would land in shell history and `ps` — and never printed.

use std::io::{BufRead, IsTerminal, Read};

use plugboard_host::DataDir;
use plugboard_host::secrets::{self, MAX_VALUE_BYTES, SecretError, SecretStore};

use crate::output::{self, table};
use crate::{CmdResult, Dirs, Failure};

fn open(dirs: &Dirs) -> Result<SecretStore, Failure> {
    SecretStore::open(DataDir::new(&dirs.data).secrets_path()).map_err(fail)
}

fn fail(e: SecretError) -> Failure {
    match e {
        SecretError::BadName { .. } | SecretError::BadValue { .. } => Failure::usage(e),
        other => Failure::failed(other),
    }
}

/// True when the environment of this process sets `name` (not empty).
fn in_env(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// `plugboard secret set NAME`: the value is one line on stdin, or typed at
/// a prompt that does not echo when stdin is a terminal.
pub fn set(dirs: &Dirs, name: &str, extra: &[String]) -> CmdResult {
    if !extra.is_empty() {
        return Err(Failure::usage(format!(
            "a secret's value is never taken from the command line (it would stay in shell history and `ps`): \
             run `plugboard secret set {name}` and type it at the prompt, or pipe it on stdin"
        )));
    }
    secrets::check_name(name).map_err(fail)?;
    // A store that cannot be used is reported before anything is typed.
    let mut store = open(dirs)?;
    let value = read_value(name)?;
    store.set(name, &value).map_err(fail)?;
    println!("secret {name} set in {}", store.path().display());
    if in_env(name) {
        eprintln!("note: {name} is also set in the environment, which is used before the secret store");
    }
    Ok(())
}

/// The value from stdin: one line, its line ending removed.
fn read_value(name: &str) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    let mut raw = if stdin.is_terminal() {
        prompt_hidden(name, &stdin)?
    } else {
        let mut buf = Vec::new();
        stdin
            .lock()
            .take(MAX_VALUE_BYTES as u64 + 3)
            .read_to_end(&mut buf)
            .map_err(|e| Failure::failed(format!("cannot read the value of {name} from stdin: {e}")))?;
        if buf.len() > MAX_VALUE_BYTES + 2 {
            return Err(Failure::usage(format!(
                "the value of {name} is over {} KiB",
                MAX_VALUE_BYTES / 1024
            )));
        }
        String::from_utf8(buf).map_err(|_| Failure::usage(format!("the value of {name} is not UTF-8 text")))?
    };
    if raw.ends_with('\n') {
        raw.pop();
        if raw.ends_with('\r') {
            raw.pop();
        }
    }
    if raw.is_empty() {
        return Err(Failure::usage(format!(
            "the value of {name} is empty; nothing stored (type it at the prompt, or pipe it on stdin)"
        )));
    }
    Ok(raw)
}

/// Echo off (the newline still echoed) until dropped.
struct NoEcho<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    saved: nix::sys::termios::Termios,
}

impl Drop for NoEcho<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

fn prompt_hidden(name: &str, stdin: &std::io::Stdin) -> Result<String, Failure> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::os::fd::AsFd;
    let fd = stdin.as_fd();
    let cannot = |e: nix::errno::Errno| Failure::failed(format!("cannot turn off the terminal's echo: {e}"));
    let saved = tcgetattr(fd).map_err(cannot)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    match secrets::purpose(name) {
        Some(p) => eprint!("{name} ({p}; not echoed): "),
        None => eprint!("{name} (not echoed): "),
    }
    tcsetattr(fd, SetArg::TCSAFLUSH, &quiet).map_err(cannot)?;
    let _restore = NoEcho { fd, saved };
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::failed(format!("cannot read the value of {name} from the terminal: {e}")))?;
    Ok(line)
}

/// `plugboard secret list [--json]`: every known and stored name, whether it
/// is set and where from, as this process sees it (environment first).
pub fn list(dirs: &Dirs, as_json: bool) -> CmdResult {
    let store = open(dirs)?;
    let rows = secrets::statuses(Some(&store));
    if as_json {
        output::json(&rows);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                if s.set { "set" } else { "not set" }.into(),
                s.source.map_or("-".into(), |src| src.to_string()),
                s.purpose.unwrap_or("-").into(),
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "SOURCE", "FOR"], &rows);
    Ok(())
}

/// `plugboard secret delete NAME`.
pub fn delete(dirs: &Dirs, name: &str) -> CmdResult {
    secrets::check_name(name).map_err(fail)?;
    let mut store = open(dirs)?;
    if store.delete(name).map_err(fail)? {
        println!("secret {name} deleted from {}", store.path().display());
        if in_env(name) {
            eprintln!("note: {name} is still set in the environment");
        }
        Ok(())
    } else if in_env(name) {
        Err(Failure::not_found(format!(
            "{name} is not in the secret store {}; it comes from the environment (unset it there)",
            store.path().display()
        )))
    } else {
        Err(Failure::not_found(format!(
            "no secret {name} in the secret store {} (see `plugboard secret list`)",
            store.path().display()
        )))
    }
}
