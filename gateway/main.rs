//! The `gatehouse` binary: parse settings, set up logging, run.

mod check;

use std::process::ExitCode;

use clap::Parser;
use gatehouse::config::{Args, Command, LogFormat};
use kube::CustomResourceExt;

/// jemalloc, not glibc's malloc: HTTP/2 allocates a task and the phases' state per stream,
/// sizes glibc serves from its slow paths (aligned and multi-KiB blocks), and jemalloc's
/// thread caches serve from a size class. 7-9 % less CPU per HTTP/2 request, 3-4 % fewer
/// instructions per proxied request, for 2 MiB more idle RSS (benches/README.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help and --version.
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => return fail(&format!("{} (see --help)", one_line(&err))),
    };
    if let Some(Command::Check(check)) = &args.command {
        return check::run(check);
    }
    if let Some(Command::Crd) = args.command {
        let crd = gatehouse::objects::StaticSite::crd();
        return match serde_saphyr::to_string(&crd) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(&format!("cannot render the CRD: {err}")),
        };
    }
    let config = match args.resolve() {
        Ok(config) => config,
        Err(err) => return fail(&err),
    };
    init_logging(config.log_format, config.log_level.as_deref());
    // One worker runs on tokio's current-thread scheduler: its run queue is one FIFO, so under
    // load every connection waits its turn, where the multi-thread scheduler's local queue (256
    // tasks) overflows into a global one it visits seldom, and a few connections wait hundreds
    // of milliseconds. It has no other worker to steal from or wake, either.
    let mut builder = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => return fail(&format!("cannot start the runtime: {err}")),
    };
    match runtime.block_on(gatehouse::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("{err:#}")),
    }
}

/// A command-line error as one line, like every other error: what is wrong and clap's tip,
/// without the usage block.
fn one_line(err: &clap::Error) -> String {
    err.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ")
}

fn fail(message: &str) -> ExitCode {
    eprintln!("gatehouse: {message}");
    ExitCode::from(2)
}

/// `--log-level` (checked when the settings were read), else $RUST_LOG, else `info`.
fn init_logging(format: LogFormat, level: Option<&str>) {
    let filter = level
        .and_then(|l| tracing_subscriber::EnvFilter::try_new(l).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| "info".into());
    // Colours only on a terminal: log files and `kubectl logs` get plain `key=value` text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
