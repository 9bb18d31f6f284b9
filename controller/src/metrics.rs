//! The controller's own `/metrics` (names in docs/metrics.md): the link, commands, pushes, and
//! the store's families. Unauthenticated, like any exporter; served as OpenMetrics, which
//! Prometheus negotiates.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::registry::Registry as Fleet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PushResult {
    success,
    failure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub result: PushResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub kind: String,
    /// `agent`, `ssh` or `wol`.
    pub path: String,
}

impl CommandLabels {
    /// `kind` is the command's capability (`command:ops/1` → `ops/1`) or a name of its own
    /// (`wake`).
    pub fn new(kind: &str, path: &str) -> CommandLabels {
        CommandLabels {
            kind: kind.trim_start_matches("command:").to_string(),
            path: path.to_string(),
        }
    }
}

/// A storage device's fragments in one state (`present`, `missing`, `orphaned`, `corrupt`,
/// `no_digest`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FragmentLabels {
    /// The DFS `DEVICE.ID`, as every storage family labels it.
    pub id: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

fn command_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Counters the link, the pusher and the command paths update; cheap clones of shared cells.
#[derive(Clone)]
pub struct ControllerMetrics {
    pub agents_connected: Gauge,
    pub state_reports: Counter,
    pub command_duration: Family<CommandLabels, Histogram, fn() -> Histogram>,
    pub pushes: Family<PushLabels, Counter>,
    pub certificate_expiry: Family<NodeLabels, Gauge>,
    /// Every node the controller knows (restored from its store at start): 1 while its agent
    /// holds a link, 0 otherwise. Discovery lists online nodes only, so an agent that is down
    /// has no `up` series: this is what alerts on it (`NodewardenNodeOffline`).
    pub node_online: Family<NodeLabels, Gauge>,
    /// Nodes reporting a storage device another node owns (refused claims), now.
    pub device_conflicts: Gauge,
    /// DFS source reads (not in the contract's table yet; counted so failures show).
    pub dfs_reads: Family<PushLabels, Counter>,
    /// Each device's last fragment audit: fragments and bytes per state, and when it was made.
    pub fragments: Family<FragmentLabels, Gauge>,
    pub fragments_bytes: Family<FragmentLabels, Gauge>,
    pub fragments_audit_time: Family<DeviceLabels, Gauge>,
    /// Audits of a device against the DFS, by result.
    pub fragment_audits: Family<PushLabels, Counter>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let m = ControllerMetrics {
            agents_connected: Gauge::default(),
            state_reports: Counter::default(),
            command_duration: Family::new_with_constructor(command_histogram),
            pushes: Family::default(),
            certificate_expiry: Family::default(),
            node_online: Family::default(),
            device_conflicts: Gauge::default(),
            dfs_reads: Family::default(),
            fragments: Family::default(),
            fragments_bytes: Family::default(),
            fragments_audit_time: Family::default(),
            fragment_audits: Family::default(),
        };
        // Both results exist from the start, so rate() has a series before the first failure.
        for result in [PushResult::success, PushResult::failure] {
            let _ = m.pushes.get_or_create(&PushLabels {
                result: result.clone(),
            });
        }
        m
    }
}

impl ControllerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "nodewarden_controller_agents_connected",
            "Agents with a live link to this controller",
            self.agents_connected.clone(),
        );
        registry.register(
            "nodewarden_controller_state_reports",
            "State reports received from agents",
            self.state_reports.clone(),
        );
        registry.register(
            "nodewarden_controller_command_duration_seconds",
            "Time from sending a command to a node until its answer, by command kind and path",
            self.command_duration.clone(),
        );
        registry.register(
            "nodewarden_controller_pushgateway_pushes",
            "Group pushes to the Pushgateway, by result",
            self.pushes.clone(),
        );
        registry.register(
            "nodewarden_controller_certificate_expiry_seconds",
            "Unix time the certificate of each connected node expires",
            self.certificate_expiry.clone(),
        );
        registry.register(
            "nodewarden_controller_node_online",
            "1 while the node's agent holds a link to this controller, 0 for a known node without one",
            self.node_online.clone(),
        );
        registry.register(
            "nodewarden_controller_device_conflicts",
            "Claims of a storage device by a node other than its owner, refused (each is also an audit event)",
            self.device_conflicts.clone(),
        );
        registry.register(
            "nodewarden_controller_dfs_reads",
            "Reads of the DFS DEVICE table, by result",
            self.dfs_reads.clone(),
        );
        registry.register(
            "nodewarden_fragments",
            "Fragments of each storage device by state, as of its last audit against the DFS FRAGMENT table",
            self.fragments.clone(),
        );
        registry.register(
            "nodewarden_fragments_bytes",
            "Bytes of each storage device's fragments by state (missing ones count 0), as of its last audit",
            self.fragments_bytes.clone(),
        );
        registry.register(
            "nodewarden_fragments_audit_timestamp_seconds",
            "Unix time of each storage device's last fragment audit",
            self.fragments_audit_time.clone(),
        );
        registry.register(
            "nodewarden_controller_fragment_audits",
            "Fragment audits of a device against the DFS database, by result",
            self.fragment_audits.clone(),
        );
    }

    /// Sets the fragment families from the devices' last audits (just before a scrape).
    pub fn refresh_fragments(&self, audits: &[crate::fragments::HeldAudit]) {
        self.fragments.clear();
        self.fragments_bytes.clear();
        self.fragments_audit_time.clear();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for held in audits {
            let a = &held.audit;
            let id = a.device_id.to_string();
            for (state, count) in [
                ("present", &a.present),
                ("missing", &a.missing),
                ("orphaned", &a.orphaned),
                ("corrupt", &a.corrupt),
                ("no_digest", &a.no_digest),
            ] {
                let labels = FragmentLabels {
                    id: id.clone(),
                    state: state.to_string(),
                };
                self.fragments
                    .get_or_create(&labels)
                    .set(gauge(count.count));
                self.fragments_bytes
                    .get_or_create(&labels)
                    .set(gauge(count.bytes));
            }
            self.fragments_audit_time
                .get_or_create(&DeviceLabels { id })
                .set(gauge(held.audited_ms / 1000));
        }
    }

    /// Sets the gauges derived from the registry (connected agents, certificate expiry) just
    /// before a scrape, so they cannot drift from it.
    /// `held_elsewhere`: in a cluster, whether another controller holds a node (online for the
    /// fleet).
    pub fn refresh_from(&self, registry: &Fleet, held_elsewhere: impl Fn(&str) -> bool) {
        self.device_conflicts
            .set(i64::try_from(registry.conflicts().len()).unwrap_or(i64::MAX));
        self.agents_connected.set(registry.online_count() as i64);
        self.certificate_expiry.clear();
        self.node_online.clear();
        for node in registry.nodes() {
            self.node_online
                .get_or_create(&NodeLabels {
                    node: node.name.clone(),
                })
                .set(i64::from(node.online || held_elsewhere(&node.name)));
            if let Some(c) = &node.connection {
                self.certificate_expiry
                    .get_or_create(&NodeLabels {
                        node: node.name.clone(),
                    })
                    .set(c.cert_not_after_unix);
            }
        }
    }
}

/// What `/metrics` serves: the registered families, and a call that refreshes the gauges
/// derived from the fleet's registry just before encoding (given by whoever owns the registry,
/// so this module does not depend on the shared state).
#[derive(Clone)]
pub struct MetricsState {
    pub refresh: Arc<dyn Fn() + Send + Sync>,
    pub registry: Arc<Registry>,
}

pub fn router(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(state)
}

async fn serve_metrics(State(state): State<MetricsState>) -> Response {
    (state.refresh)();
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding: {e}\n"),
        )
            .into_response(),
    }
}
