//! The `corvid` binary: `corvid serve` runs a server, every other subcommand is a client.

mod check;
mod cli;
mod cluster;
mod commands;
mod error;
mod output;
mod password;
mod session;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::{CliError, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    // `check` runs without a runtime and has exit statuses of its own.
    if let Command::Check { data } = &cli.command {
        return check::run(data);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", err.line());
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let runtime_error = |err: std::io::Error| {
        CliError::local("runtime", format!("cannot start the runtime: {err}"))
    };
    match cli.command {
        Command::Serve(args) => {
            // The configuration says how many runtime threads the server wants.
            let config = args.config().map_err(CliError::Server)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.runtime_threads())
                .enable_all()
                .build()
                .map_err(runtime_error)?;
            runtime
                .block_on(corvid_server::run(config))
                .map_err(CliError::Server)
        }
        Command::Cluster(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(runtime_error)?
            .block_on(cluster::run(args)),
        // A client command does a few calls and is done.
        command => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(runtime_error)?
            .block_on(commands::run(cli.global, command)),
    }
}

/// Help and version go to stdout as usual; a real usage error becomes one line.
fn usage_error(err: clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            eprintln!(
                "{}",
                CliError::usage(one_line(&err.render().to_string())).line()
            );
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Folds clap's multi-line error (message, tip, usage) into one line.
fn one_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for paragraph in rendered.split("\n\n") {
        let paragraph = paragraph.trim();
        if paragraph.is_empty() || paragraph.starts_with("For more information") {
            continue;
        }
        let words: Vec<&str> = paragraph.split_whitespace().collect();
        let mut text = words.join(" ");
        if let Some(rest) = text.strip_prefix("error: ") {
            text = rest.to_string();
        }
        if let Some(rest) = text.strip_prefix("Usage: ") {
            text = format!("usage: {rest}");
        }
        parts.push(text);
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_line(args: &[&str]) -> String {
        let err =
            Cli::try_parse_from(std::iter::once("corvid").chain(args.iter().copied())).unwrap_err();
        one_line(&err.render().to_string())
    }

    #[test]
    fn a_usage_error_folds_into_one_line() {
        let line = usage_line(&["login"]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("<NAME>"), "{line}");
        assert!(line.contains("usage: corvid login"), "{line}");
        let line = usage_line(&["send", "bob", "hi", "--bogus"]);
        assert!(line.starts_with("unexpected argument '--bogus'"), "{line}");
    }
}
