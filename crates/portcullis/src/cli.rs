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
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file (secrets included) and print every problem.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a fresh base64 256-bit key for the session key ring.
    GenKey,
    /// Inspect or end sessions directly in the configured store (every instance sharing it sees
    /// the change at once). With the memory store, or a file store an instance has open, use the
    /// admin API of the running instance.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// How many live sessions a subject has.
    List {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The subject (the ID token's `sub`).
        #[arg(long)]
        subject: String,
    },
    /// End sessions: all of a subject's, one provider session's (`sid`), or every session.
    Revoke {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Every session of this subject (the ID token's `sub`).
        #[arg(long, conflicts_with_all = ["sid", "all"], required_unless_present_any = ["sid", "all"])]
        subject: Option<String>,
        /// The sessions of this provider session (the ID token's `sid`).
        #[arg(long, conflicts_with = "all")]
        sid: Option<String>,
        /// Every session in the store.
        #[arg(long)]
        all: bool,
    },
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
        Command::Sessions { action } => sessions(action),
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
            // First, before the slow start-up steps (see `Hangup`).
            let hangup = runtime.block_on(async { crate::server::Hangup::listen() });
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("{}: {problems}", config.display());
                    return ExitCode::FAILURE;
                }
            };
            // The OTLP exporter posts through this runtime, so it starts inside it.
            let otlp = match &cfg.tracing {
                Some(t) => match runtime.block_on(async { crate::otlp::Exporter::start(t) }) {
                    Ok(started) => Some(started),
                    Err(e) => {
                        eprintln!("error: tracing.otlp_endpoint: {e:#}");
                        return ExitCode::FAILURE;
                    }
                },
                None => None,
            };
            let (exporter, tracer) = otlp.unzip();
            crate::telemetry::init(cfg.log_format, tracer);
            let result = runtime.block_on(crate::server::serve(cfg, config, hangup));
            if let Some(e) = exporter {
                e.shutdown(); // flushes the last batch
            }
            match result {
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

fn sessions(action: SessionsAction) -> ExitCode {
    let path = match &action {
        SessionsAction::List { config, .. } | SessionsAction::Revoke { config, .. } => {
            config.clone()
        }
    };
    let mut cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{}: {problems}", path.display());
            return ExitCode::FAILURE;
        }
    };
    // Standard output carries the command's JSON answer, for scripts: audit lines that would go
    // there go to standard error instead.
    if let Some(audit) = cfg.audit.as_mut()
        && audit.target == crate::config::AuditTarget::Stdout
    {
        audit.target = crate::config::AuditTarget::Stderr;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cfg.session.store, crate::config::StoreConfig::Memory) {
        eprintln!(
            "error: the memory store lives inside the running instance; use its admin API (see docs/identity-lifecycle.md)"
        );
        return ExitCode::FAILURE;
    }
    let result = runtime.block_on(async move {
        let state = crate::AppState::new(cfg)?;
        let iss = state.config.oidc.issuer.clone();
        let m = &state.sessions;
        let out = match action {
            SessionsAction::List { subject, .. } => {
                let n = m.live_sessions_of_subject(&iss, &subject).await?;
                serde_json::json!({"subject": subject, "sessions": n})
            }
            SessionsAction::Revoke {
                subject: Some(sub), ..
            } => {
                let n = m.end_subject(&iss, &sub).await?;
                crate::admin::revoked(&state, "subject", Some(&sub), n);
                serde_json::json!({"revoked": n})
            }
            SessionsAction::Revoke { sid: Some(sid), .. } => {
                let n = m.end_provider_session(&iss, &sid).await?;
                crate::admin::revoked(&state, "sid", None, n);
                serde_json::json!({"revoked": n})
            }
            SessionsAction::Revoke { all: true, .. } => {
                let n = m.end_all().await?;
                crate::admin::revoked(&state, "all", None, n);
                serde_json::json!({"revoked": n})
            }
            SessionsAction::Revoke { .. } => anyhow::bail!("give --subject, --sid or --all"),
        };
        anyhow::Ok(out)
    });
    match result {
        Ok(out) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
