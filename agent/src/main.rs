//! `sessionwatch` command line: `run`, `replay`, `targets`, `check-config`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sessionwatch::cli;
use sessionwatch_sessions::Severity;

/// Watches HTTP sessions after TLS termination and flags session hijacking
/// and broken session hygiene.
#[derive(Debug, Parser)]
#[command(name = "sessionwatch", version, about, long_about = None)]
struct Args {
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture live traffic with eBPF and report findings (needs root).
    Run {
        /// Config file (TOML); default: the embedded config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address of /metrics, /healthz, /readyz.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Findings as JSON lines to FILE, or `-` for stdout.
        #[arg(long)]
        alerts: Option<String>,
        /// Web configuration (Prometheus exporter-toolkit format: TLS,
        /// client certificates, basic auth) of the admin endpoint.
        #[arg(long = "web.config.file", value_name = "FILE")]
        web_config_file: Option<PathBuf>,
    },
    /// Analyse pcap/pcapng files offline.
    Replay {
        /// Capture files (pcap or pcapng).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Config file (TOML); default: the embedded config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Findings as JSON lines to FILE, or `-` for stdout (default).
        #[arg(long)]
        alerts: Option<String>,
        /// Write the run's metrics (Prometheus text format) to FILE.
        #[arg(long)]
        metrics_out: Option<PathBuf>,
        /// Exit 1 when a finding at or above this severity exists.
        #[arg(long)]
        fail_on: Option<Severity>,
    },
    /// Show what `run` would attach to, and what it skips and why.
    Targets {
        /// Config file (TOML); default: the embedded config.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// The config file.
        file: PathBuf,
        /// Also replay these captures with the config and print the session
        /// cookie names learned from them (`sessions.learn_cookie_names`).
        #[arg(long, num_args = 1.., value_name = "CAPTURE")]
        learned: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(&args.log_level);
    let code = match args.command {
        Command::Run {
            config,
            metrics_listen,
            alerts,
            web_config_file,
        } => cli::run_live(cli::RunOptions {
            config,
            metrics_listen,
            alerts,
            web_config_file,
        }),
        Command::Replay {
            files,
            config,
            alerts,
            metrics_out,
            fail_on,
        } => cli::replay(cli::ReplayOptions {
            files,
            config,
            alerts,
            metrics_out,
            fail_on,
        }),
        Command::Targets { config } => cli::targets(config.as_deref()),
        Command::CheckConfig { file, learned } if learned.is_empty() => cli::check_config(&file),
        Command::CheckConfig { file, learned } => cli::check_config_learned(&file, &learned),
    };
    ExitCode::from(code)
}
