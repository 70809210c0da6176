//! `sentimqd`: the edge daemon. Classifies text arriving over MQTT (see the README's contract).
//!
//! Parses flags, loads the configuration, calls `sentimq::daemon::run` or `validate`, and maps
//! the outcome to an exit status: 0, 1 (runtime failure) or 78 (configuration error).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sentimq::daemon::config::{self, Flags, Sources};
use sentimq::daemon::{self, ValidateOptions, EX_CONFIG};

/// Classify text arriving over MQTT with a sentiment model, on small devices.
#[derive(Parser)]
#[command(name = "sentimqd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Flags for `run` when no subcommand is given.
    #[command(flatten)]
    flags: Flags,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT (the default).
    Run(Flags),
    /// Check the configuration, the model, the TLS files and the broker; exit 0 or 78.
    Validate(ValidateArgs),
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    flags: Flags,
    /// Do not connect to the broker.
    #[arg(long)]
    offline: bool,
    /// Treat warnings as errors.
    #[arg(long)]
    deny_warnings: bool,
    /// Print the merged configuration (secrets redacted).
    #[arg(long)]
    print: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate(args)) => validate(args),
        Some(Command::Run(flags)) => run(&flags),
        None => run(&cli.flags),
    }
}

fn run(flags: &Flags) -> ExitCode {
    let result = config::load(Sources::from_process(flags))
        .map_err(daemon::Error::from)
        .and_then(daemon::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = if error.is_config() { EX_CONFIG } else { 1 };
            eprintln!("error: {:#}", anyhow::Error::from(error));
            ExitCode::from(code)
        }
    }
}

fn validate(args: ValidateArgs) -> ExitCode {
    let options = ValidateOptions {
        is_offline: args.offline,
        deny_warnings: args.deny_warnings,
    };
    let report = daemon::validate(Sources::from_process(&args.flags), options);
    if args.print {
        if let Some(config) = &report.config {
            println!("{}", daemon::validate::print_config(config));
        }
    }
    println!("{report}");
    if report.is_ok(options.deny_warnings) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_CONFIG)
    }
}
