//! `lse_server`: Stratum's gRPC storage server. See `lse_server --help`.

use std::process::ExitCode;

use clap::Parser;
use stratum::{Config, run};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();

    if config.upgrade {
        return upgrade(&config.data_dir);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lse_server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ready = |addr| println!("lse_server listening on {addr}");
    match runtime.block_on(run(config, ready, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lse_server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `lse_server --upgrade`: rewrites a format-2 data directory in place.
fn upgrade(dir: &std::path::Path) -> ExitCode {
    match stratum_io::upgrade(&stratum_io::OsFileSystem, dir) {
        Ok(report) => {
            for path in &report.rewritten {
                println!("upgraded {}", path.display());
            }
            for path in &report.already_current {
                println!("already current: {}", path.display());
            }
            if let Some((kept, dropped)) = report.cut_tail {
                println!("cut a torn tail of {dropped} bytes off active.seg (kept {kept} bytes)");
            }
            println!(
                "lse_server: {} segment files upgraded ({} records), {} hint files removed",
                report.rewritten.len(),
                report.records,
                report.hints_removed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lse_server: upgrade of {} failed: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
