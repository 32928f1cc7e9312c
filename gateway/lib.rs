//! Gatehouse: a Kubernetes ingress controller and edge gateway.
//!
//! Sources fill [`objects::Objects`]; [`translate::translate`] turns them into a
//! [`snapshot::Snapshot`]; the [`proxy`] serves requests from the snapshot in service.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod metrics;
pub mod objects;
pub mod proxy;
pub mod routing;
pub mod shared;
pub mod snapshot;
pub mod sources;
pub mod static_site;
pub mod translate;

use anyhow::Context;
use tokio::sync::watch;

use config::Config;
use shared::Shared;
use sources::manifests::{ManifestDir, POLL_INTERVAL};

/// Runs Gatehouse until SIGTERM or SIGINT, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shared = Shared::new(config.upstream.clone(), config.access_log);
    let http = proxy::server::bind(config.http_listen)
        .with_context(|| format!("cannot listen on --http-listen {}", config.http_listen))?;
    let admin = proxy::server::bind(config.admin_listen)
        .with_context(|| format!("cannot listen on --admin-listen {}", config.admin_listen))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let Some(dir) = config.manifests.clone() else {
        anyhow::bail!(
            "no --manifests directory given (the Kubernetes API source is not available in this build)"
        );
    };
    let mut manifests = ManifestDir::new(dir);
    load_manifests(&shared, &mut manifests, &config)
        .with_context(|| format!("cannot read --manifests {}", manifests.root().display()))?;
    let watcher = {
        let (shared, config, stop) = (shared.clone(), config.clone(), stop_rx.clone());
        std::thread::Builder::new().name("manifests".into()).spawn(move || {
            while !*stop.borrow() {
                std::thread::sleep(POLL_INTERVAL);
                if let Err(err) = load_manifests(&shared, &mut manifests, &config) {
                    tracing::error!(dir = %manifests.root().display(), error = %err, "cannot read manifests directory; keeping the configuration in service");
                    shared.metrics.config_reload_errors.inc();
                }
            }
        })?
    };

    tracing::info!(http = %config.http_listen, admin = %config.admin_listen, "gatehouse listening");
    let admin_task = tokio::spawn(admin::run(shared.clone(), admin, stop_rx.clone()));
    let http_task = tokio::spawn(proxy::server::run_http(
        shared.clone(),
        http,
        config.server.clone(),
        stop_rx.clone(),
    ));

    shutdown_signal().await;
    tracing::info!("shutting down: not ready, draining in-flight requests");
    shared.start_draining();
    let _ = stop_tx.send(true);
    let _ = http_task.await;
    let _ = admin_task.await;
    let _ = watcher.join();
    Ok(())
}

/// Scans the manifest directory and, if anything changed, builds and publishes a new snapshot.
fn load_manifests(shared: &Shared, dir: &mut ManifestDir, config: &Config) -> std::io::Result<()> {
    let report = dir.scan()?;
    for (file, reason) in &report.errors {
        tracing::error!(file = %file.display(), %reason, "manifest file not loaded; its last good objects stay in force");
        shared.metrics.config_reload_errors.inc();
    }
    if report.changed || !shared.is_ready() {
        shared::rebuild(shared, &dir.objects(), &config.translate);
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
