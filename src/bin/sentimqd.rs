//! `sentimqd`: the edge daemon. Classifies text arriving over MQTT (see the README's contract).
//!
//! Parses flags, loads the configuration, calls `sentimq::daemon::run`, `validate` or `demo`,
//! and maps the outcome to an exit status: 0, 1 (runtime failure) or 78 (configuration error).

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
    /// First run: start the daemon (and, with no broker configured, one in-process), publish a
    /// few reviews, print the results, stop.
    #[cfg(feature = "embedded-broker")]
    Demo(DemoArgs),
}

#[cfg(feature = "embedded-broker")]
#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    flags: Flags,
    /// Seconds to wait for the daemon to come online, then for the replies.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Texts to classify (default: four sample reviews).
    #[arg(value_name = "TEXT")]
    texts: Vec<String>,
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
        #[cfg(feature = "embedded-broker")]
        Some(Command::Demo(args)) => demo(args),
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
            eprintln!("error: {}", sentimq::error_text::describe(&error));
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

#[cfg(feature = "embedded-broker")]
fn demo(args: DemoArgs) -> ExitCode {
    use sentimq::daemon::demo::{self, DemoError, DemoOptions};

    let mut options = DemoOptions {
        timeout: std::time::Duration::from_secs(args.timeout),
        ..DemoOptions::default()
    };
    if !args.texts.is_empty() {
        options.texts = args.texts;
    }
    let loaded = match config::load(Sources::from_process(&args.flags)) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {}", sentimq::error_text::describe(&error));
            return ExitCode::from(EX_CONFIG);
        }
    };
    let texts = options.texts.clone();
    let result = demo::run(loaded, options, |index, reply| {
        println!("> {}\n{reply}\n", texts[index]);
    });
    match result {
        Ok(report) => {
            if let Some(address) = report.embedded_broker {
                eprintln!("(embedded MQTT broker on {address}; pass --server or set mqtt.server to use yours)");
            }
            let missing = report.replies.iter().filter(|(_, r)| r.is_none()).count();
            if missing == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: {missing} of {} texts got no reply",
                    report.replies.len()
                );
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            let code = match &error {
                DemoError::Daemon(e) if e.is_config() => EX_CONFIG,
                _ => 1,
            };
            eprintln!("error: {}", sentimq::error_text::describe(&error));
            ExitCode::from(code)
        }
    }
}
