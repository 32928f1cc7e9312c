//! Gatehouse: a Kubernetes ingress controller and edge gateway.
//!
//! Sources fill [`objects::Objects`]; [`translate::translate`] turns them into a
//! [`snapshot::Snapshot`]; the [`proxy`] serves requests from the snapshot in service.
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod body;
pub mod config;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod otel;
pub mod proxy;
pub mod routing;
pub mod shared;
pub mod slot;
pub mod snapshot;
pub mod sources;
pub mod static_site;
pub mod status;
pub mod tls;
pub mod translate;
pub mod warning;

#[cfg(test)]
mod test_util;

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use config::Config;
use shared::Shared;
use sources::manifests::ManifestDir;

/// Runs Gatehouse until SIGTERM or SIGINT, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Access lines the log filter drops (`--log-level warn`, say) are not prepared per request
    // at all. The filter is set once, before this runs, so this is decided once too.
    let access_log = config.access_log && tracing::enabled!(target: "access", tracing::Level::INFO);
    let shared = Shared::new(config.upstream.clone(), access_log);
    if let Some(settings) = &config.tracing {
        let (tracer, export) = otel::Tracer::new(settings);
        tokio::spawn(export);
        let _ = shared.plane.tracer.set(tracer);
    }
    let http = proxy::server::bind(config.http_listen)
        .with_context(|| format!("cannot listen on --http-listen {}", config.http_listen))?;
    let admin = proxy::server::bind(config.admin_listen)
        .with_context(|| format!("cannot listen on --admin-listen {}", config.admin_listen))?;
    let https = proxy::server::bind(config.https_listen)
        .with_context(|| format!("cannot listen on --https-listen {}", config.https_listen))?;
    let fallback_cert = tls::self_signed().map_err(anyhow::Error::msg)?;
    let resolver = Arc::new(proxy::sni::CertResolver::new(
        shared.plane.clone(),
        fallback_cert,
    ));
    let tls_config = tls::server_config(resolver).context("cannot set up TLS")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Idle upstream connections of endpoints no request goes to any more are closed here; the
    // pools close the others as requests take them.
    let sweep_every = (config.upstream.idle_timeout / 2).max(std::time::Duration::from_secs(1));
    let plane = shared.plane.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(sweep_every).await;
            plane.upstreams.connector.sweep();
        }
    });

    let source = match config.manifests.clone() {
        Some(dir) => Source::Manifests(watch_manifests(&shared, dir, &config, stop_rx.clone())?),
        None => Source::Kube(
            sources::kube::start(shared.clone(), &config, stop_rx.clone())
                .await
                .context("no --manifests directory given, and the Kubernetes API cannot be used")?,
        ),
    };

    tracing::info!(http = %config.http_listen, https = %config.https_listen, admin = %config.admin_listen, "gatehouse listening");
    // The admin listener stays up until the drain is over, so readiness probes get "not ready"
    // meanwhile instead of a refused connection.
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::run(
        shared.clone(),
        admin,
        config.admin,
        admin_stop_rx,
    ));
    let http_task = tokio::spawn(proxy::server::run_http(
        shared.plane.clone(),
        http,
        config.server.clone(),
        stop_rx.clone(),
    ));
    let https_task = tokio::spawn(proxy::server::run_https(
        shared.plane.clone(),
        https,
        tls_config,
        config.server.clone(),
        stop_rx.clone(),
    ));

    shutdown_signal().await;
    // Not ready at once, so load balancers stop sending; serving goes on for the delay, as
    // endpoints are removed from Services with some lag, then the listeners stop and drain.
    shared.readiness.start_draining();
    if !config.shutdown_delay.is_zero() {
        tracing::info!(delay = ?config.shutdown_delay, "shutting down: not ready, still serving for the shutdown delay");
        tokio::time::sleep(config.shutdown_delay).await;
    }
    tracing::info!("shutting down: no longer accepting, draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = http_task.await;
    let _ = https_task.await;
    let _ = admin_stop_tx.send(true);
    let _ = admin_task.await;
    match source {
        Source::Manifests(watcher) => {
            let _ = watcher.join();
        }
        Source::Kube(kube) => kube.join().await,
    }
    Ok(())
}

/// Where the objects come from.
enum Source {
    /// The thread polling the manifest directory.
    Manifests(std::thread::JoinHandle<()>),
    Kube(sources::kube::KubeSource),
}

/// Loads the manifest directory and starts the thread that polls it. A process reading
/// manifests has no one to elect a leader with: it leads.
fn watch_manifests(
    shared: &Arc<Shared>,
    dir: std::path::PathBuf,
    config: &Config,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    shared.leadership.set(true);
    let mut manifests = ManifestDir::new(dir);
    // ACME keeps its account, orders and certificates under --state-dir; the certificates come
    // back through this source as Secrets.
    let acme_store: Option<Arc<dyn acme::store::Store>> = match &config.acme.state_dir {
        Some(state) => {
            let store = acme::store::FileStore::open(state)
                .with_context(|| format!("cannot use --state-dir {}", state.display()))?;
            manifests = manifests.with_secrets_from(store.certificates_dir());
            Some(Arc::new(store))
        }
        None => None,
    };
    let mut rebuilder = shared::Rebuilder::new(config.translate.clone());
    load_manifests(shared, &mut rebuilder, &mut manifests)
        .with_context(|| format!("cannot read --manifests {}", manifests.root().display()))?;
    acme::manager::spawn(shared, &config.acme, acme_store, stop.clone())?;
    let shared = shared.clone();
    let watcher = std::thread::Builder::new().name("manifests".into()).spawn(move || {
        while !*stop.borrow() {
            std::thread::sleep(manifests.poll_interval());
            // Only the first scan can fail; later a directory that cannot be listed is a
            // problem of the scan, reported once, and every object stays.
            if let Err(err) = load_manifests(&shared, &mut rebuilder, &mut manifests) {
                tracing::error!(dir = %manifests.root().display(), error = %err, "cannot read manifests directory; keeping the configuration in service");
                shared.metrics.reload_failed();
            }
        }
    })?;
    Ok(watcher)
}

/// Scans the manifest directory and, if anything changed, builds and publishes a new snapshot,
/// with a `File` warning for each file (or directory) whose objects on disk are not in force.
/// Each problem is logged (and counted in `config_reload_errors_total`) when it appears, not at
/// every scan.
fn load_manifests(
    shared: &Shared,
    rebuilder: &mut shared::Rebuilder,
    dir: &mut ManifestDir,
) -> std::io::Result<()> {
    let report = dir.scan()?;
    for (file, reason) in &report.errors {
        tracing::error!(path = %file.display(), %reason, "manifests not loaded; their last good objects stay in force");
        shared.metrics.reload_failed();
    }
    for file in &report.resolved {
        tracing::info!(path = %file.display(), "manifests loaded again");
    }
    if report.changed || report.problems_changed || !shared.readiness.is_ready() {
        rebuilder.rebuild(shared, dir.objects(), dir.warnings());
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
