//! The `gatehouse` binary: parse settings, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use gatehouse::config::{Args, Command, LogFormat};
use kube::CustomResourceExt;

fn main() -> ExitCode {
    let args = Args::parse();
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
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return fail(&format!("cannot start the runtime: {err}")),
    };
    match runtime.block_on(gatehouse::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("{err:#}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("gatehouse: {message}");
    ExitCode::from(2)
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
