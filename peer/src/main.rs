//! `sbcftp-peer`: parse arguments, set up logging, TLS and signals, run the
//! command, and turn its result into an exit code (ripgrep style: 0 on
//! success, 1 with a one-line cause chain on stderr otherwise; a closed stdout
//! pipe counts as success).

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use sbcftp_peer::cli::{Cli, Command};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a TLS provider; https trackers use ring.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    // --log / SBCFTP_LOG, else RUST_LOG, else the command's default.
    let filter = match (cli.log.as_deref(), std::env::var("RUST_LOG")) {
        (Some(f), _) => EnvFilter::try_new(f),
        (None, Ok(f)) if !f.trim().is_empty() => EnvFilter::try_new(f),
        _ => Ok(EnvFilter::new(default_level)),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sbcftp-peer: bad --log filter: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sbcftp-peer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        sbcftp_peer::run(cli, shutdown).await
    });
    // Blocking threads (a server connection, a download) may still be
    // winding down; do not wait for them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sbcftp-peer: {}", sbcftp_peer::ui::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == io::ErrorKind::BrokenPipe)
    })
}

/// Cancels `shutdown` on the first Ctrl-C or SIGTERM; a second one exits at once.
async fn on_signal(shutdown: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("shutting down (press Ctrl-C again to stop at once)");
    shutdown.cancel();
    wait_for_signal().await;
    eprintln!("sbcftp-peer: stopped");
    std::process::exit(130);
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
