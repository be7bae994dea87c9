//! `plugboard secret`: a value goes in on stdin and never comes out — not on
//! stdout or stderr of any verb, not in `--json`, not world-readable on disk.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

const VALUE: &str = "pb-test-VALUE-7c1e9a";
const ENV_VALUE: &str = "pb-env-VALUE-55d2b0";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("plugboard").unwrap();
        c.env_remove("PLUGBOARD_DATA_DIR").env("NO_COLOR", "1");
        for (name, _) in plugboard_host::secrets::KNOWN {
            c.env_remove(name);
        }
        c.arg("--data-dir").arg(self.data());
        c
    }
    /// Runs, checks the exit code, and checks that no secret value is in
    /// either output stream; returns stdout.
    fn run(&self, c: &mut Command, code: i32) -> String {
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "stdout: {stdout}\nstderr: {stderr}");
        for v in [VALUE, ENV_VALUE] {
            assert!(
                !stdout.contains(v) && !stderr.contains(v),
                "{v} leaked:\n{stdout}\n{stderr}"
            );
        }
        stdout
    }
}

fn row<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[test]
fn a_secret_set_on_stdin_is_listed_but_never_printed() {
    let e = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    // set: from stdin, the line ending stripped.
    let mut c = e.cmd();
    c.args(["secret", "set", "LAMBDA_API_KEY"])
        .write_stdin(format!("{VALUE}\r\n"));
    let out = e.run(&mut c, 0);
    assert!(out.contains("secret LAMBDA_API_KEY set"), "{out}");
    let mut c = e.cmd();
    c.args(["secret", "set", "MY_TOKEN"]).write_stdin(format!("{VALUE}\n"));
    e.run(&mut c, 0);

    let file = e.data().join("secrets.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["secrets"]["LAMBDA_API_KEY"], VALUE);

    // list: every known name, the stored ones, where each comes from.
    let mut c = e.cmd();
    c.args(["secret", "list"]).env("RUNPOD_API_KEY", ENV_VALUE);
    let text = e.run(&mut c, 0);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        line("LAMBDA_API_KEY").contains(" set ") && line("LAMBDA_API_KEY").contains("secret store"),
        "{text}"
    );
    assert!(line("RUNPOD_API_KEY").contains("environment"), "{text}");
    assert!(line("VAST_API_KEY").contains("not set"), "{text}");
    assert!(line("AWS_SESSION_TOKEN").contains("not set"), "{text}");
    assert!(line("MY_TOKEN").contains("secret store"), "{text}");

    let mut c = e.cmd();
    c.args(["secret", "list", "--json"]).env("RUNPOD_API_KEY", ENV_VALUE);
    let list: Value = serde_json::from_str(&e.run(&mut c, 0)).unwrap();
    assert_eq!(
        row(&list, "LAMBDA_API_KEY"),
        &serde_json::json!({"name": "LAMBDA_API_KEY", "set": true, "source": "secret store", "for": "Lambda Cloud API key"})
    );
    assert_eq!(row(&list, "RUNPOD_API_KEY")["source"], "environment");
    assert_eq!(row(&list, "VAST_API_KEY")["set"], false);
    assert_eq!(row(&list, "VAST_API_KEY")["source"], Value::Null);
    assert_eq!(row(&list, "MY_TOKEN")["for"], Value::Null);

    // The environment wins, and setting the store says so (without values).
    let mut c = e.cmd();
    c.args(["secret", "set", "RUNPOD_API_KEY"])
        .env("RUNPOD_API_KEY", ENV_VALUE)
        .write_stdin(VALUE);
    e.run(&mut c, 0);

    // Refused: a value on the command line (not echoed back), an empty
    // value, several lines, a bad name.
    let mut c = e.cmd();
    c.args(["secret", "set", "VAST_API_KEY", VALUE]);
    e.run(&mut c, 2);
    let mut c = e.cmd();
    c.args(["secret", "set", "VAST_API_KEY"]).write_stdin("\n");
    e.run(&mut c, 2);
    let mut c = e.cmd();
    c.args(["secret", "set", "VAST_API_KEY"])
        .write_stdin(format!("{VALUE}\n{VALUE}\n"));
    e.run(&mut c, 2);
    let mut c = e.cmd();
    c.args(["secret", "set", "vast_key"]).write_stdin(VALUE);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"vast_key\" is not a secret name"));
    let list: Value = serde_json::from_str(&e.run(e.cmd().args(["secret", "list", "--json"]), 0)).unwrap();
    assert_eq!(row(&list, "VAST_API_KEY")["set"], false);

    // A file others can read is refused, naming the chmod to run.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = e.cmd().args(["secret", "list"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains(&format!("chmod 600 {}", file.display())), "{stderr}");
    assert!(!stderr.contains(VALUE));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // delete, then it is gone; deleting again is "not found".
    for name in ["LAMBDA_API_KEY", "MY_TOKEN", "RUNPOD_API_KEY"] {
        let out = e.run(e.cmd().args(["secret", "delete", name]), 0);
        assert!(out.contains(&format!("secret {name} deleted")), "{out}");
    }
    e.run(e.cmd().args(["secret", "delete", "LAMBDA_API_KEY"]), 3);
    let list: Value = serde_json::from_str(&e.run(e.cmd().args(["secret", "list", "--json"]), 0)).unwrap();
    assert_eq!(row(&list, "LAMBDA_API_KEY")["set"], false);
    assert!(
        list.as_array().unwrap().iter().all(|r| r["name"] != "MY_TOKEN"),
        "{list}"
    );
    let left = std::fs::read_to_string(&file).unwrap();
    assert!(!left.contains(VALUE), "{left}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
}
