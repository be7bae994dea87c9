//! Command implementations: [`local`] (no host needed), [`serve`] (runs a
//! host) and [`remote`] (clients of a running host).

mod budget;
mod cost;
mod local;
mod remote;
mod secret;
mod serve;

use crate::cli::{BudgetAction, Command, ConfigAction, SecretAction};
use crate::{CmdResult, Dirs, Failure};

/// Runs one command.
pub fn run(cmd: Command, dirs: &Dirs) -> CmdResult {
    // Commands that read plugins and configs see what a host running on
    // this data dir sees, unless told otherwise.
    let adopted;
    let dirs = match cmd {
        Command::List { .. } | Command::Show { .. } | Command::Stats { .. } | Command::Config { .. } => {
            adopted = serve::with_running_host_dirs(dirs);
            &adopted
        }
        _ => dirs,
    };
    match cmd {
        Command::List {
            category,
            mode,
            configured,
            unconfigured,
            json,
        } => local::list(dirs, category, mode, configured, unconfigured, json),
        Command::Show { id, json } => local::show(dirs, &id, json),
        Command::Stats { json } => local::stats(dirs, json),
        Command::Config { action } => match action {
            ConfigAction::Get { id, .. } => local::config_get(dirs, &id),
            ConfigAction::Set { id, json, file, pairs } => local::config_set(dirs, &id, json, file, pairs),
            ConfigAction::Validate { id, json, file } => local::config_validate(dirs, &id, json, file),
            ConfigAction::Delete { id } => local::config_delete(dirs, &id),
            ConfigAction::Edit { id } => local::config_edit(dirs, &id),
        },
        Command::Ps { json } => local::ps(dirs, json),
        Command::Gc { all, dry_run, json } => local::gc(dirs, all, dry_run, json),
        Command::Cost { hours, since, json } => cost::cost(dirs, hours, since.as_deref(), json),
        Command::Budget { action } => match action {
            BudgetAction::Set {
                scope,
                max_usd,
                period,
                max_usd_per_hour,
            } => budget::set(dirs, &scope, max_usd, &period, max_usd_per_hour),
            BudgetAction::Show { json } => budget::show(dirs, json),
            BudgetAction::Delete { scope } => budget::delete(dirs, &scope),
        },
        Command::Secret { action } => match action {
            SecretAction::Set { name, value } => secret::set(dirs, &name, &value),
            SecretAction::List { json } => secret::list(dirs, json),
            SecretAction::Delete { name } => secret::delete(dirs, &name),
        },
        Command::Logs { id, follow, lines } => local::logs(dirs, &id, follow, lines),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut crate::cli::Cli::command(),
                "plugboard",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::ExampleWorker { name } => match plugboard_examples::by_name(&name) {
            Some(exec) => {
                let code = plugboard_worker::run(exec);
                if code == std::process::ExitCode::SUCCESS {
                    Ok(())
                } else {
                    Err(Failure {
                        code: 1,
                        error: "the worker stopped with an error".into(),
                    })
                }
            }
            None => Err(Failure::not_found(format!(
                "no bundled example {name:?}; known: {}",
                plugboard_examples::NAMES.join(", ")
            ))),
        },
        Command::Serve(args) => serve::serve(dirs, args),
        Command::Demo { bind } => serve::demo(dirs, bind),
        Command::Start { id } => remote::action(dirs, &id, "start"),
        Command::Stop { id } => remote::action(dirs, &id, "stop"),
        Command::Restart { id } => remote::action(dirs, &id, "restart"),
        Command::Status { id, json } => remote::status(dirs, &id, json),
        Command::Call {
            id,
            input,
            input_file,
            stream,
        } => remote::call(dirs, &id, input, input_file, stream),
    }
}

/// A tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))
}

/// Plugins directories given explicitly must exist (a usage error otherwise).
pub fn check_plugin_dirs(dirs: &Dirs) -> Result<(), Failure> {
    if dirs.plugins_explicit
        && let Some(p) = dirs.plugins.iter().find(|p| !p.is_dir())
    {
        return Err(Failure::usage(format!(
            "plugins directory {} does not exist",
            p.display()
        )));
    }
    Ok(())
}
