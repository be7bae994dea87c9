//! Commands that act on running plugins: clients of the host's API on the
//! data dir's Unix socket.

use std::path::PathBuf;

use http_body_util::BodyExt;
use hyper::Method;
use plugboard_protocol::StreamEvent;
use plugboard_web::{ApiClient, ClientError};
use serde_json::{Value, json};

use super::runtime;
use crate::output;
use crate::{CmdResult, Dirs, Failure};

fn api_failure(e: ClientError) -> Failure {
    match &e {
        ClientError::Api { status: 404, .. } => Failure::not_found(e),
        ClientError::Api { body, .. } => {
            if let Some(vs) = body.get("violations").and_then(Value::as_array) {
                for v in vs {
                    eprintln!(
                        "  {}: {}",
                        v["pointer"].as_str().filter(|p| !p.is_empty()).unwrap_or("/"),
                        v["reason"].as_str().unwrap_or("")
                    );
                }
            }
            Failure::failed(e)
        }
        _ => Failure::failed(e),
    }
}

fn plugin_path(id: &str, what: &str) -> Result<String, Failure> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || id.contains("..")
    {
        return Err(Failure::not_found(format!(
            "unknown plugin {id:?} (see `plugboard list`)"
        )));
    }
    Ok(format!("/api/v1/plugins/{id}/{what}"))
}

/// `start`, `stop`, `restart`.
pub fn action(dirs: &Dirs, id: &str, verb: &str) -> CmdResult {
    let path = plugin_path(id, verb)?;
    let client = ApiClient::for_data_dir(&dirs.data);
    let rt = runtime()?;
    let spin = output::spinner(format!("{verb} {id}"));
    let r = rt.block_on(client.json(Method::POST, &path, None));
    if let Some(s) = spin {
        s.finish_and_clear();
    }
    let st = r.map_err(api_failure)?;
    let done = match verb {
        "start" => "started",
        "stop" => "stopped",
        _ => "restarted",
    };
    let state = output::state(st["state"].as_str().unwrap_or("?"));
    match (st["pid"].as_u64(), st["endpoint"].as_str()) {
        (Some(pid), _) => println!("{done} {id} (pid {pid}, {state})"),
        (None, Some(e)) if verb != "stop" => println!("{done} {id} ({e}, {state})"),
        _ => println!("{done} {id} ({state})"),
    }
    Ok(())
}

/// `status`.
pub fn status(dirs: &Dirs, id: &str, as_json: bool) -> CmdResult {
    let path = plugin_path(id, "status")?;
    let client = ApiClient::for_data_dir(&dirs.data);
    let st = runtime()?
        .block_on(client.json(Method::GET, &path, None))
        .map_err(api_failure)?;
    if as_json {
        output::json(&st);
        return Ok(());
    }
    let now = plugboard_host::ledger::now_ms();
    let rows = vec![
        vec!["state".to_owned(), output::state(st["state"].as_str().unwrap_or("?"))],
        vec!["backend".into(), st["backend"].as_str().unwrap_or("-").to_owned()],
        vec![
            "resource".into(),
            serde_json::from_value::<plugboard_host::ResourceHandle>(st["resource"].clone())
                .map_or("-".into(), |h| h.short()),
        ],
        vec!["endpoint".into(), st["endpoint"].as_str().unwrap_or("-").to_owned()],
        vec!["pid".into(), st["pid"].as_u64().map_or("-".into(), |p| p.to_string())],
        vec![
            "uptime".into(),
            st["ready_at_ms"]
                .as_i64()
                .map_or("-".into(), |t| output::human_duration(now - t)),
        ],
        vec!["restarts".into(), st["restarts"].to_string()],
        vec!["log".into(), st["log_path"].as_str().unwrap_or("-").to_owned()],
        vec!["last exit".into(), st["last_exit"].to_string()],
        vec!["note".into(), st["note"].as_str().unwrap_or("-").to_owned()],
    ];
    output::table(&["FIELD", "VALUE"], &rows);
    Ok(())
}

/// `call`.
pub fn call(dirs: &Dirs, id: &str, input: Option<String>, input_file: Option<PathBuf>, stream: bool) -> CmdResult {
    let text = match (input, input_file) {
        (Some(t), _) => Some((t, "--input".to_owned())),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Failure::failed(format!("cannot read stdin: {e}")))?;
            Some((s, "stdin".to_owned()))
        }
        (None, Some(f)) => Some((
            std::fs::read_to_string(&f).map_err(|e| Failure::usage(format!("cannot read {}: {e}", f.display())))?,
            f.display().to_string(),
        )),
        (None, None) => None,
    };
    let input: Value = match text {
        Some((t, from)) => serde_json::from_str(&t).map_err(|e| {
            Failure::usage(format!(
                "{from} is not valid JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ))
        })?,
        None => json!({}),
    };
    let client = ApiClient::for_data_dir(&dirs.data);
    let rt = runtime()?;
    if !stream {
        let path = plugin_path(id, "call")?;
        let out = rt
            .block_on(client.json(Method::POST, &path, Some(&json!({"input": input}))))
            .map_err(api_failure)?;
        output::json(&out["output"]);
        return Ok(());
    }
    let path = format!("{}?stream=true", plugin_path(id, "call")?);
    rt.block_on(async {
        let resp = client
            .send(Method::POST, &path, Some(&json!({"input": input})))
            .await
            .map_err(api_failure)?;
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let bar = output::spinner("running");
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::failed(format!("the stream broke: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let ev: StreamEvent = serde_json::from_slice(&line[..line.len() - 1])
                    .map_err(|e| Failure::failed(format!("bad event from the host: {e}")))?;
                match ev {
                    StreamEvent::Progress { progress, message } => {
                        let text = format!("[{:>3.0}%] {}", progress * 100.0, message.unwrap_or_default());
                        match &bar {
                            Some(b) => b.set_message(text),
                            None => eprintln!("{text}"),
                        }
                    }
                    StreamEvent::Log { level, message } => eprintln!("{level}: {message}"),
                    StreamEvent::Result { output: out } => {
                        if let Some(b) = &bar {
                            b.finish_and_clear();
                        }
                        output::json(&out);
                        return Ok(());
                    }
                    StreamEvent::Error { error } => {
                        if let Some(b) = &bar {
                            b.finish_and_clear();
                        }
                        return Err(Failure::failed(format!(
                            "plugin {id}: {} ({:?})",
                            error.message, error.code
                        )));
                    }
                }
            }
        }
        Err(Failure::failed("the stream ended without a result"))
    })
}
