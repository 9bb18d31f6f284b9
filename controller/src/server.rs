//! `serve`: the running controller as a library function, so that the binary and integration
//! tests start it the same way. Opens the store and restores the fleet from it (every known node
//! offline, with its roles, services, devices and interfaces; nodes declared in `[nodes.X]`
//! added), binds the link and the HTTP server, starts the pusher and the DFS reader, and on
//! shutdown refuses new actions, lets running ones end and record their outcome (bounded),
//! closes the agents' connections and writes the store's last state.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nodewarden_shared::protocol::close;

use crate::api_actions::ActionsApi;
use crate::config::ControllerConfig;
use crate::link::{self, LinkSettings};
use crate::state::{Controller, lock, now_millis};
use crate::{admin, dfs, fleet, http_auth, push};

/// How long shutdown waits for running actions to end before the store closes (those still
/// running then are logged with an unknown outcome at the next start).
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// How long one page of the DFS `FRAGMENT` table may take.
pub const FRAGMENT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails, naming the directory and the reason (read-only filesystem, permissions, full disk),
/// unless a file can be created in `dir`: better refused at start than a store that cannot
/// write or an API token that cannot be made. The probe file is removed.
fn check_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    let probe = dir.join(format!(".nodewarden-write-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| {
            format!(
                "data_dir {} is not writable (the store, the API token and the state live there)",
                dir.display()
            )
        })?;
    std::fs::remove_file(&probe).with_context(|| format!("removing {}", probe.display()))?;
    Ok(())
}

/// Runs the controller described by `config` until `shutdown` resolves (or the link endpoint
/// closes).
pub async fn serve(
    config: ControllerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = LinkSettings {
        listen: config.listen,
        ca_dir: config.ca_dir.clone(),
        idle_timeout: config.idle_timeout,
        keep_alive: config.keep_alive,
        expiry_warning_days: config.expiry_warning_days,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    check_writable(&config.data_dir)?;
    let store = crate::store::Store::open(config.store.clone())
        .await
        .context("opening the fleet store")?;
    let mut registry = fleet::restore(&store.nodes(), &store.devices());
    for (name, node) in &config.actions.nodes {
        registry.declare(name, &node.services, now_millis());
    }
    let known = registry.nodes().count();
    tracing::info!(database = %store.database(), nodes = known, "fleet store open; known nodes restored (offline until their agents connect)");
    let controller = Controller::new(registry);
    controller.attach_store(store.handle());
    let cluster_metrics = crate::cluster::ClusterMetrics::default();
    if let Some(status) = store.lease_status() {
        tracing::info!(
            cluster_id = store.cluster_id().unwrap_or_default(),
            "cluster mode: node links are leased in the shared database"
        );
        tokio::spawn(crate::cluster::follow(
            controller.clone(),
            status,
            cluster_metrics.clone(),
            store.reader(),
        ));
        tokio::spawn(crate::cluster::sweep_stale_requests(
            controller.clone(),
            store.reader(),
        ));
    }
    let link = link::start(&settings, controller.clone())?;
    tracing::info!(
        address = %link.endpoint.local_addr()?,
        idle_timeout = ?settings.idle_timeout,
        keep_alive = ?settings.keep_alive,
        "link listening"
    );
    let endpoint = link.endpoint.clone();
    let mut registry = prometheus_client::registry::Registry::default();
    controller.metrics.register(&mut registry);
    store.metrics().register(&mut registry);
    if store.lease_status().is_some() {
        cluster_metrics.register(&mut registry);
    }
    let actions = ActionsApi::new(controller.clone(), config.actions.clone());
    if let Some(me) = store.cluster_id() {
        let client = match &config.peer {
            Some(peer) => {
                let (listener, acceptor) = crate::peer::bind(peer, &config.ca_dir)
                    .await
                    .context("starting the cluster's peer endpoint ([cluster] peer_listen)")?;
                let client = crate::peer::PeerClient::new(
                    peer,
                    &config.ca_dir,
                    config.actions.operation_timeout + std::time::Duration::from_secs(5),
                )
                .context("the cluster's peer client ([cluster] peer_cert_file)")?;
                tracing::info!(listen = %peer.listen, url = %peer.url, "peer endpoint: actions forwarded by the cluster's other controllers");
                tokio::spawn(admin::serve_connections(
                    listener,
                    Some(acceptor),
                    crate::peer::router(actions.agent.clone(), me.to_string()),
                    admin::Limits::default(),
                ));
                Some(Arc::new(client))
            }
            None => {
                tracing::warn!(
                    "no [cluster] peer_listen: actions on nodes other controllers hold cannot be forwarded from here"
                );
                None
            }
        };
        actions.attach_cluster(crate::api_actions::ClusterActions {
            me: me.to_string(),
            reader: store.reader(),
            client,
        });
    }
    // The DFS's FRAGMENT table (`[dfs]`): fragment audits and the orphan clean-up.
    let fragment_table = match &config.dfs {
        Some(dfs) => Some(
            crate::fragments::FragmentTable::connect_lazy(&dfs.url, FRAGMENT_QUERY_TIMEOUT)
                .with_context(|| format!("dfs.url {}", crate::store::redact(&dfs.url)))?,
        ),
        None => None,
    };
    if let Some(table) = fragment_table.clone() {
        tokio::spawn(crate::api_fragments::audit_task(controller.clone(), table));
    }
    if let Some(addr) = config.http_listen {
        if http_auth::ensure_token_file(&config.api_token_file).with_context(|| {
            format!(
                "creating the API token file {}",
                config.api_token_file.display()
            )
        })? {
            tracing::info!(file = %config.api_token_file.display(), "generated the API token");
        }
        if !config.sd_token_file.exists() {
            tracing::warn!(
                file = %config.sd_token_file.display(),
                "service-discovery token file is missing: Prometheus cannot discover agents \
                 until it exists (or uses the API token)"
            );
        }
        let fleet = controller.clone();
        let http = admin::HttpState {
            auth: http_auth::Auth {
                api: Arc::new(http_auth::TokenFile::new(&config.api_token_file)),
                sd: Arc::new(http_auth::TokenFile::new(&config.sd_token_file)),
                alerts: Arc::new(http_auth::TokenFile::new(&config.alerts_token_file)),
            },
            metrics: crate::metrics::MetricsState {
                refresh: Arc::new(move || {
                    let elsewhere = fleet.elsewhere();
                    fleet
                        .metrics
                        .refresh_from(&lock(&fleet.registry), |n| elsewhere.contains_key(n));
                    let audits = lock(&fleet.fragments).audits();
                    fleet.metrics.refresh_fragments(&audits);
                }),
                registry: Arc::new(registry),
            },
            actions: actions.clone(),
            events: Some(store.reader()),
            alerts: Default::default(),
            fragments: fragment_table.clone(),
            links: crate::wire::ConsoleLinks {
                grafana_url: config.grafana_url.clone(),
                prometheus_url: config.prometheus_url.clone(),
            },
            cluster_sd: store.cluster_id().map(|me| crate::sd::ClusterSd {
                me: me.to_string(),
                reader: store.reader(),
            }),
        };
        let listener = admin::bind(addr, config.http_tls.as_ref()).await?;
        let c = controller.clone();
        tokio::spawn(async move {
            if let Err(e) = admin::serve(listener, c, http).await {
                tracing::error!("{e:#}");
            }
        });
    }
    let dfs = config.dfs.clone().map(|dfs_config| {
        let source = Arc::new(dfs::DfsSource::new(dfs_config.interval));
        tracing::info!(dfs = %crate::store::redact(&dfs_config.url), "reading the DFS DEVICE table");
        tokio::spawn(dfs::run(dfs_config, source.clone(), controller.metrics.clone()));
        source
    });
    if let Some(push_config) = config.push.clone() {
        tracing::info!(pushgateway = %push_config.url, interval = ?push_config.interval, "pushing fleet aggregates");
        // In a cluster the pusher lease's holder pushes, from the shared database.
        let fleet = store.lease_status().map(|_| store.reader());
        tokio::spawn(push::run(push_config, controller.clone(), dfs, fleet));
    }
    tokio::select! {
        _ = link.done => {}
        _ = shutdown => {}
    }
    let running = actions.in_flight.running();
    if running > 0 {
        tracing::info!(
            running,
            "shutting down: refusing new actions, waiting up to {SHUTDOWN_DRAIN:?} for running ones"
        );
    }
    let left = actions.drain(SHUTDOWN_DRAIN).await;
    if left > 0 {
        tracing::warn!(
            left,
            "shutting down with actions still running: their outcome will be logged as unknown"
        );
    }
    tracing::info!("shutting down: closing agent connections");
    endpoint.close(close::SHUTDOWN.into(), b"controller shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    let online = lock(&controller.registry).online_count();
    // Writes the transitions of the connections just closed, and any backlog.
    if let Err(e) = store.close().await {
        tracing::error!(error = %e, "the fleet store could not write everything before stopping");
    }
    tracing::info!(online, "stopped");
    Ok(())
}
