//! The controller as one of several sharing one MySQL/MariaDB database (`[cluster]`,
//! docs/scale-out.md): follows what the store's lease steps find and acts on the shared state.
//! A node another controller took over has its stale link here closed; a controller whose
//! database stayed away for a whole lease term closes every link and turns new ones away until
//! a step succeeds again; the pusher lease decides which controller pushes the fleet's
//! aggregates. The leases themselves live in the store (`store/lease.rs`, written by its writer).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::state::Controller;
use crate::store::{LeaseStatus, StoreReader};

/// The cluster's figures on the controller's `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
    pub authority: Gauge,
    pub leases_held: Gauge,
    pub pusher: Gauge,
    pub links_lost: Counter,
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "nodewarden_controller_lease_authority",
            "1 while this controller's lease steps reach the cluster's database within a lease term (it may hold links)",
            self.authority.clone(),
        );
        registry.register(
            "nodewarden_controller_leases_held",
            "Node link leases this controller holds in the cluster's database",
            self.leases_held.clone(),
        );
        registry.register(
            "nodewarden_controller_pusher",
            "1 while this controller holds the pusher lease (it pushes the fleet's aggregates)",
            self.pusher.clone(),
        );
        registry.register(
            "nodewarden_controller_lease_links_closed",
            "Links closed here because another controller took their node's lease",
            self.links_lost.clone(),
        );
    }
}

/// How often at most the fleet is read from the database to learn nodes that first linked to
/// another controller.
const LEARN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the controller holding the pusher lease closes, for the whole fleet, requests no
/// controller will end (their controller was killed): `unknown` once older than
/// `store::CLUSTER_OPEN_REQUEST_AGE`.
const SWEEP_REQUESTS_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Applies every lease status the store publishes until the store stops.
pub async fn follow(
    controller: Arc<Controller>,
    mut status: watch::Receiver<LeaseStatus>,
    metrics: ClusterMetrics,
    reader: StoreReader,
) {
    let mut had_authority = None;
    let mut learnt: Option<tokio::time::Instant> = None;
    loop {
        let current = status.borrow_and_update().clone();
        apply(&controller, &current, &mut had_authority, &metrics);
        // A node another controller holds that this one never heard of: its record is read
        // so that it can be listed, planned and acted on here too.
        let unknown = {
            let registry = crate::state::lock(&controller.registry);
            current.elsewhere.keys().any(|n| registry.get(n).is_none())
        };
        if unknown && learnt.is_none_or(|at| at.elapsed() >= LEARN_EVERY) {
            learnt = Some(tokio::time::Instant::now());
            match reader.fleet().await {
                Ok((nodes, devices)) => crate::fleet::learn(&controller, &nodes, &devices),
                Err(e) => tracing::warn!(error = %e, "the cluster's nodes could not be read"),
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Every [`SWEEP_REQUESTS_EVERY`], on the controller holding the pusher lease (one for the
/// fleet): closes as `unknown` the requests no controller will end, those of killed
/// controllers. Its own task, so that its read of the events never delays a lease status.
/// The first sweep waits a whole period: the store's start already closed the old ones, and
/// the pusher lease is not known before the first lease step.
pub async fn sweep_stale_requests(controller: Arc<Controller>, reader: StoreReader) {
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::now() + SWEEP_REQUESTS_EVERY,
        SWEEP_REQUESTS_EVERY,
    );
    loop {
        every.tick().await;
        let Some(store) = controller.store() else {
            return;
        };
        if !controller.is_pusher() {
            continue;
        }
        match reader.stale_requests().await {
            Ok(open) if open.is_empty() => {}
            Ok(open) => {
                let closed = store.close_stale_requests(open);
                tracing::warn!(closed, "requests of stopped controllers logged as unknown");
            }
            Err(e) => tracing::warn!(error = %e, "open requests could not be read"),
        }
    }
}

fn apply(
    controller: &Controller,
    status: &LeaseStatus,
    had_authority: &mut Option<bool>,
    metrics: &ClusterMetrics,
) {
    metrics.authority.set(i64::from(status.authority));
    metrics
        .leases_held
        .set(i64::try_from(status.held.len()).unwrap_or(i64::MAX));
    metrics.pusher.set(i64::from(status.pusher));
    controller.set_pusher(status.pusher);
    if *controller.elsewhere() != status.elsewhere {
        controller.set_elsewhere(status.elsewhere.clone());
    }
    if *had_authority != Some(status.authority) {
        if status.authority {
            controller.set_no_authority(None);
            if had_authority.is_some() {
                tracing::info!("lease authority back: the database answers; links are taken again");
            }
        } else if status.steps > 0 {
            let closed = controller.set_no_authority(Some(
                "controller without its database: no lease renewal for a lease term".into(),
            ));
            tracing::error!(
                links = closed,
                "lease authority lost: every link closed, new ones turned away until the \
                 database answers (agents move to the other controllers)"
            );
        }
        *had_authority = Some(status.authority);
    }
    let before = u64::try_from(status.lost_before_ms).unwrap_or(0);
    for node in &status.lost {
        if controller.lease_taken(node, before) {
            metrics.links_lost.inc();
            tracing::info!(%node, "another controller took the node's lease: stale link closed");
        }
    }
}
