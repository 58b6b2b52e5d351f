//! The `myelectricaldata-vm-exporter` binary: parses the command line and
//! the environment, then hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use myelectricaldata_vm_exporter::{
    check, config, config::Config, daemon, listener, once, progress, series, source::Source,
};
use tracing_subscriber::EnvFilter;

/// Keeps VictoriaMetrics an exact mirror of MyElectricalData's PostgreSQL data.
///
/// Configuration comes from the environment (DATABASE_URL and the
/// VICTORIAMETRICS_* variables); see the README.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone, Copy)]
enum Command {
    /// Run the daemon (the default): poll for changes, reconcile in full periodically.
    Run,
    /// One full reconciliation and export, then exit.
    Once,
    /// Test the connections: PostgreSQL, VictoriaMetrics, a write read back, retention.
    Check,
    /// Print the lines a full export would send.
    Render,
    /// Apply the migrations and exit.
    Migrate,
    /// Ask the running daemon's /health (VICTORIAMETRICS_HTTP_LISTEN_ADDR): exit 0 when healthy.
    Health,
    /// Print the price grid in force (VICTORIAMETRICS_PRICES_FILE, else the shipped one), ready to copy and edit.
    Prices,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Some(Command::Health) => return health(),
        Some(Command::Prices) => return prices(),
        _ => {}
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    block_on(execute(cli.command.unwrap_or(Command::Run), config))
}

/// Runs `work` on a single-threaded runtime: the exporter's work is one
/// pipeline, and a Raspberry Pi gains nothing from more threads.
fn block_on(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, config: Config) -> ExitCode {
    let result: Result<(), Box<dyn std::error::Error>> = match command {
        Command::Run => daemon::run(config, shutdown_signal())
            .await
            .map_err(Into::into),
        Command::Once => once::once(config, progress_display())
            .await
            .map(drop)
            .map_err(Into::into),
        Command::Migrate => {
            async {
                Source::connect_lazy(&config.database_url)?
                    .migrate()
                    .await?;
                tracing::info!("migrations applied");
                Ok::<_, Box<dyn std::error::Error>>(())
            }
            .await
        }
        Command::Render => {
            async {
                let source = Source::connect_lazy(&config.database_url)?;
                let mut out = std::io::stdout();
                let report = series::render_all(&source, &config, &mut out).await?;
                series::warn_skipped(&report);
                Ok::<_, Box<dyn std::error::Error>>(())
            }
            .await
        }
        Command::Health => return health(),
        Command::Prices => return prices(),
        Command::Check => {
            let items = check::run(&config).await;
            print!("{}", check::report(&items));
            return if check::passed(&items) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "failed");
            ExitCode::FAILURE
        }
    }
}

/// The `health` command: asks the running daemon's `/health`.
fn health() -> ExitCode {
    let addr = match config::listen_addr_from_env() {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            eprintln!("VICTORIAMETRICS_HTTP_LISTEN_ADDR is off: the daemon serves no /health");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    block_on(async move {
        match listener::probe(addr).await {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(text) => {
                println!("unhealthy: {text}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The `prices` command: the grid in force, as its file has it, comments
/// and sources included. Needs no other variable.
fn prices() -> ExitCode {
    match config::prices_from_env() {
        Ok(grid) => {
            print!("{}", grid.text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("configuration error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A progress bar when a person watches `once` on a terminal.
fn progress_display() -> progress::Display {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress::Display::Bar
    } else {
        progress::Display::Logs
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
