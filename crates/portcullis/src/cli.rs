//! Command line: `serve`, `check-config`, `gen-key`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{config::Config, crypto::keyring::KeyRing};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Backend-for-Frontend security gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file (secrets included) and print every problem.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a fresh base64 256-bit key for the session key ring.
    GenKey,
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::GenKey => match KeyRing::generate_encoded() {
            Ok(k) => {
                #[allow(clippy::print_stdout)]
                {
                    println!("{k}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                eprintln!(
                    "{}: OK ({} route(s), redirect URI {})",
                    config.display(),
                    c.routes.len(),
                    c.redirect_uri()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{}: {problems}", config.display());
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("{}: {problems}", config.display());
                    return ExitCode::FAILURE;
                }
            };
            crate::telemetry::init(cfg.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::server::serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "fatal");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
