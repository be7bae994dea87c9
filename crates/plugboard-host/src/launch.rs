//! Turning a manifest's `[launch]` into a program, arguments, environment
//! and working directory, per execution mode.
//!
//! conda_env plugins run as `conda run -n ENV --no-capture-output CMD…` (or
//! `mamba`, or `micromamba run -n ENV CMD…`): the tool is the one configured,
//! else `PLUGBOARD_CONDA`, else the first of micromamba, mamba, conda on PATH.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use plugboard_core::ExecutionMode;

use crate::error::HostError;
use crate::manifest::Manifest;

/// A launch ready to spawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The program.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
}

/// Looks `name` up on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The conda-compatible tool to use: `configured`, else `PLUGBOARD_CONDA`,
/// else micromamba, mamba or conda found on PATH.
pub fn find_conda(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(c) = configured {
        return Some(c.to_path_buf());
    }
    if let Some(c) = std::env::var_os("PLUGBOARD_CONDA").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(&c);
        return if p.components().count() > 1 {
            Some(p)
        } else {
            which(&p.to_string_lossy())
        };
    }
    ["micromamba", "mamba", "conda"].into_iter().find_map(which)
}

/// Replaces every `${NAME}` in `s` with `vars[NAME]`, else the host's
/// environment variable NAME; an unknown name is an error naming it.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .ok_or_else(|| name.to_owned())?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves `manifest`'s launch for its execution mode, expanding `${NAME}`
/// in command, args and env values from `vars` and the environment.
pub fn resolve(
    manifest: &Manifest,
    conda_tool: Option<&Path>,
    vars: &BTreeMap<String, String>,
) -> Result<Resolved, HostError> {
    let plugin = manifest.unique_id();
    let mut manifest = manifest.clone();
    {
        let undefined = |name: String| HostError::UndefinedVariable {
            plugin: plugin.clone(),
            name,
            manifest: manifest.path.clone(),
        };
        let l = &mut manifest.launch;
        if let Some(c) = &l.command {
            l.command = Some(expand(c, vars).map_err(undefined)?);
        }
        for a in &mut l.args {
            *a = expand(a, vars).map_err(undefined)?;
        }
        for v in l.env.values_mut() {
            *v = expand(v, vars).map_err(undefined)?;
        }
    }
    let manifest = &manifest;
    if !matches!(
        manifest.execution_mode,
        ExecutionMode::Subprocess | ExecutionMode::CondaEnv
    ) {
        return Err(HostError::UnsupportedMode {
            plugin,
            mode: manifest.execution_mode,
            missing: "the process backend runs subprocess and conda_env plugins only".into(),
        });
    }
    let l = &manifest.launch;
    let missing = |field: &'static str| HostError::MissingLaunch {
        plugin: plugin.clone(),
        field,
        mode: manifest.execution_mode,
        manifest: manifest.path.clone(),
    };
    let cwd = match &l.cwd {
        Some(c) => manifest.dir.join(c),
        None => manifest.dir.clone(),
    };
    let command = l
        .command
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| missing("command"))?;
    // A command with a slash is a path relative to the manifest's folder.
    let program: OsString = if command.contains('/') {
        manifest.dir.join(command).into_os_string()
    } else {
        command.into()
    };
    let args: Vec<OsString> = l.args.iter().map(OsString::from).collect();
    match manifest.execution_mode {
        ExecutionMode::Subprocess => Ok(Resolved {
            program,
            args,
            env: l.env.clone(),
            cwd,
        }),
        ExecutionMode::CondaEnv => {
            let env_name = l
                .conda_env
                .as_deref()
                .filter(|e| !e.is_empty())
                .ok_or_else(|| missing("conda_env"))?;
            let tool = find_conda(conda_tool).ok_or_else(|| HostError::CondaNotFound { plugin: plugin.clone() })?;
            let is_micromamba = tool
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("micromamba"));
            let mut full: Vec<OsString> = vec!["run".into(), "-n".into(), env_name.into()];
            if !is_micromamba {
                full.push("--no-capture-output".into());
            }
            full.push(program);
            full.extend(args);
            Ok(Resolved {
                program: tool.into_os_string(),
                args: full,
                env: l.env.clone(),
                cwd,
            })
        }
        other => Err(HostError::UnsupportedMode {
            plugin,
            mode: other,
            missing: "the process backend runs subprocess and conda_env plugins only".into(),
        }),
    }
}
