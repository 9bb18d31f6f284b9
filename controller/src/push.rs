//! Pushes the fleet aggregates to the Pushgateway (groups and names: docs/metrics.md).
//!
//! Every interval the pusher takes a [`FleetSnapshot`] (registry and store, no I/O), turns it into
//! whole groups with [`groups`] (a plain function, unit-tested), and PUTs each group, which
//! replaces it whole: a device that left is gone after the next push. It runs as its own task with
//! a timeout per request, so a slow or absent Pushgateway never delays the link or the API;
//! every push is counted by result, and a failure streak is logged once (and its end).
//!
//! With the DFS source configured, the original two groups carry the DFS's `DEVICE` values
//! exactly as the original scripts did, and the `dfs` group repeats them under nodewarden's names;
//! when the DFS cannot be read those three groups are deleted rather than left stale.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::PushConfig;
use crate::dfs::{DfsDevice, DfsSource};
use crate::metrics::{PushLabels, PushResult};
use crate::state::Controller;
use crate::store::{DeviceReport, NodeRecord, StoreReader};

/// The groups only the DFS source feeds when it is configured.
pub const JOB_ONLINE_DEVICE_COUNT: &str = "online_device_count";
pub const JOB_DEVICE_LEFTRS: &str = "device_leftrs";
pub const JOB_NODEWARDEN: &str = "nodewarden";
pub const JOB_DFS: &str = "dfs";

/// Every role a node may have: each gets a series (zero included), so panels never go blank.
const ROLES: [&str; 3] = ["storage", "ray", "other"];

/// A storage device of an online node, as its agent measured it.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineDevice {
    pub id: u32,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// What the aggregates are computed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetSnapshot {
    /// Roles of each online node.
    pub online: BTreeMap<String, Vec<String>>,
    /// Roles of each node the controller knows (online or not).
    pub known: BTreeMap<String, Vec<String>>,
    /// Measured devices of online nodes (a device whose folder could not be measured is left out).
    pub devices: Vec<OnlineDevice>,
}

impl FleetSnapshot {
    pub fn take(controller: &Controller) -> FleetSnapshot {
        let mut snapshot = FleetSnapshot::default();
        if let Some(store) = controller.store() {
            for record in store.nodes() {
                snapshot
                    .known
                    .insert(record.info.node_id.clone(), record.info.roles.clone());
            }
        }
        let registry = controller
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for node in registry.nodes() {
            let roles: Vec<String> = node.roles.iter().map(|r| r.as_str().to_string()).collect();
            if !node.online {
                snapshot.known.entry(node.name.clone()).or_insert(roles);
                continue;
            }
            snapshot.known.insert(node.name.clone(), roles.clone());
            snapshot.online.insert(node.name.clone(), roles);
            // Only the devices it owns: a refused claim never merges into the device's values.
            for d in &node.devices {
                if d.error.is_none() {
                    snapshot.devices.push(OnlineDevice {
                        id: d.device_id,
                        total_bytes: d.total_bytes,
                        free_bytes: d.free_bytes,
                    });
                }
            }
        }
        snapshot.devices.sort_by_key(|d| d.id);
        snapshot
    }

    /// The whole fleet as the shared database has it (a cluster's pusher): every node with its
    /// roles, the online ones, and the devices of online nodes.
    pub fn from_records(nodes: &[NodeRecord], devices: &[DeviceReport]) -> FleetSnapshot {
        let mut snapshot = FleetSnapshot::default();
        for record in nodes {
            let id = &record.info.node_id;
            snapshot.known.insert(id.clone(), record.info.roles.clone());
            if record.online {
                snapshot
                    .online
                    .insert(id.clone(), record.info.roles.clone());
            }
        }
        for d in devices {
            if let (true, Ok(id)) = (
                snapshot.online.contains_key(&d.node_id),
                u32::try_from(d.device_id),
            ) {
                snapshot.devices.push(OnlineDevice {
                    id,
                    total_bytes: d.total_bytes,
                    free_bytes: d.free_bytes,
                });
            }
        }
        snapshot.devices.sort_by_key(|d| d.id);
        snapshot
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdLabels {
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

/// What one round does with a group.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupAction {
    /// PUT this body (text format 0.0.4).
    Put(String),
    /// DELETE the group (its source is unavailable; stale values are worse than none).
    Delete,
}

fn encode(registry: &Registry) -> String {
    let mut openmetrics = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut openmetrics, registry);
    let mut out = String::new();
    nodewarden_shared::exposition::openmetrics_to_text004(&openmetrics, &mut out);
    out
}

/// `count` and `leftrs{id}` families as two groups (the original layout).
fn device_groups(
    prefix: &str,
    count_name: &str,
    leftrs_name: &str,
    devices: &[(i64, i64)],
) -> (String, String) {
    let mut count = Registry::default();
    let gauge = Gauge::<i64>::default();
    gauge.set(devices.len() as i64);
    count.register(
        format!("{prefix}{count_name}"),
        "Number of online storage devices",
        gauge,
    );
    let mut leftrs = Registry::default();
    let family = Family::<IdLabels, Gauge>::default();
    for (id, value) in devices {
        family
            .get_or_create(&IdLabels { id: id.to_string() })
            .set(*value);
    }
    leftrs.register(
        format!("{prefix}{leftrs_name}"),
        "Remaining bytes of each online storage device",
        family,
    );
    (encode(&count), encode(&leftrs))
}

/// The groups of one round, by job. `dfs`: `None` without a DFS source; `Some(None)` when it is
/// configured but its last read failed; `Some(Some(rows))` otherwise.
pub fn groups(
    snapshot: &FleetSnapshot,
    legacy_prefix: &str,
    dfs: Option<Option<&[DfsDevice]>>,
) -> Vec<(&'static str, GroupAction)> {
    let mut out = Vec::new();
    let legacy = |devices: &[(i64, i64)]| {
        let prefix = format!("{legacy_prefix}_");
        device_groups(&prefix, "online_device_count", "device_leftrs", devices)
    };
    match dfs {
        None => {
            let measured: Vec<(i64, i64)> = snapshot
                .devices
                .iter()
                .map(|d| {
                    (
                        i64::from(d.id),
                        i64::try_from(d.free_bytes).unwrap_or(i64::MAX),
                    )
                })
                .collect();
            let (count, leftrs) = legacy(&measured);
            out.push((JOB_ONLINE_DEVICE_COUNT, GroupAction::Put(count)));
            out.push((JOB_DEVICE_LEFTRS, GroupAction::Put(leftrs)));
        }
        Some(None) => {
            out.push((JOB_ONLINE_DEVICE_COUNT, GroupAction::Delete));
            out.push((JOB_DEVICE_LEFTRS, GroupAction::Delete));
            out.push((JOB_DFS, GroupAction::Delete));
        }
        Some(Some(rows)) => {
            let rows: Vec<(i64, i64)> = rows.iter().map(|r| (r.id, r.leftrs)).collect();
            let (count, leftrs) = legacy(&rows);
            out.push((JOB_ONLINE_DEVICE_COUNT, GroupAction::Put(count)));
            out.push((JOB_DEVICE_LEFTRS, GroupAction::Put(leftrs)));
            let (count, leftrs) = device_groups(
                "nodewarden_dfs_",
                "online_device_count",
                "device_leftrs",
                &rows,
            );
            out.push((JOB_DFS, GroupAction::Put(count + &leftrs)));
        }
    }

    let mut fleet = Registry::default();
    let by_role = |nodes: &BTreeMap<String, Vec<String>>| {
        let family = Family::<RoleLabels, Gauge>::default();
        let present: BTreeSet<&str> = nodes.values().flatten().map(String::as_str).collect();
        for role in ROLES.iter().copied().chain(present) {
            let count = nodes
                .values()
                .filter(|r| r.iter().any(|x| x == role))
                .count();
            family
                .get_or_create(&RoleLabels {
                    role: role.to_string(),
                })
                .set(count as i64);
        }
        family
    };
    fleet.register(
        "nodewarden_nodes_online",
        "Nodes with a live link to the controller, by role (a node counts once per role)",
        by_role(&snapshot.online),
    );
    fleet.register(
        "nodewarden_nodes_known",
        "Nodes the controller knows, online or not, by role",
        by_role(&snapshot.known),
    );
    let size = Gauge::<i64>::default();
    size.set(snapshot.devices.iter().map(|d| d.total_bytes).sum::<u64>() as i64);
    fleet.register(
        "nodewarden_storage_size_bytes",
        "Size of the filesystems holding the online storage devices, as measured on disk",
        size,
    );
    let free = Gauge::<i64>::default();
    free.set(snapshot.devices.iter().map(|d| d.free_bytes).sum::<u64>() as i64);
    fleet.register(
        "nodewarden_storage_free_bytes",
        "Bytes available to the DFS on the online storage devices, as measured on disk",
        free,
    );
    let devices = Gauge::<i64>::default();
    devices.set(snapshot.devices.len() as i64);
    fleet.register(
        "nodewarden_storage_devices_online",
        "Storage devices of online nodes measured on disk",
        devices,
    );
    out.push((JOB_NODEWARDEN, GroupAction::Put(encode(&fleet))));
    out
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

async fn send(
    client: &Client,
    config: &PushConfig,
    job: &str,
    action: &GroupAction,
) -> Result<(), String> {
    let url = format!("{}/metrics/job/{job}", config.url);
    let (method, body) = match action {
        GroupAction::Put(body) => (Method::PUT, body.clone()),
        GroupAction::Delete => (Method::DELETE, String::new()),
    };
    let request = Request::builder()
        .method(method)
        .uri(&url)
        .header(
            hyper::header::CONTENT_TYPE,
            nodewarden_shared::exposition::TEXT_004_CONTENT_TYPE,
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("{url}: {e}"))?;
    let response = tokio::time::timeout(config.timeout, client.request(request))
        .await
        .map_err(|_| format!("{url}: no answer within {:?}", config.timeout))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if status.is_success()
        || (matches!(action, GroupAction::Delete) && status == StatusCode::NOT_FOUND)
    {
        return Ok(());
    }
    let body = tokio::time::timeout(
        config.timeout,
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .ok()
    .and_then(|b| b.ok())
    .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
    .unwrap_or_default();
    Err(format!("{url}: {status}: {body}"))
}

/// Pushes until the task is dropped.
/// With `fleet` (a cluster), only while this controller holds the pusher lease, and from the
/// shared database.
pub async fn run(
    config: PushConfig,
    controller: Arc<Controller>,
    dfs: Option<Arc<DfsSource>>,
    fleet: Option<StoreReader>,
) {
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // Deleting an absent group once is enough; avoid a DELETE every round while the DFS is down.
    let mut deleted = false;
    loop {
        tick.tick().await;
        let snapshot = match &fleet {
            None => FleetSnapshot::take(&controller),
            // Another controller of the cluster pushes.
            Some(_) if !controller.is_pusher() => continue,
            Some(reader) => match reader.fleet().await {
                Ok((nodes, devices)) => FleetSnapshot::from_records(&nodes, &devices),
                Err(e) => {
                    tracing::warn!(error = %e, "no push this round: the fleet could not be read");
                    continue;
                }
            },
        };
        let rows = dfs.as_ref().map(|d| d.current());
        let round = groups(
            &snapshot,
            &config.legacy_prefix,
            rows.as_ref().map(|r| r.as_deref()),
        );
        let mut errors = Vec::new();
        let dfs_down = matches!(rows, Some(None));
        // The groups of a round go out together, so a hung Pushgateway costs one timeout per
        // round, not one per group.
        let mut sends = tokio::task::JoinSet::new();
        for (job, action) in round {
            if matches!(action, GroupAction::Delete) && deleted {
                continue;
            }
            let (client, config) = (client.clone(), config.clone());
            sends.spawn(async move { send(&client, &config, job, &action).await });
        }
        while let Some(joined) = sends.join_next().await {
            let result = joined.unwrap_or_else(|e| Err(format!("push task: {e}")));
            let label = match &result {
                Ok(()) => PushResult::success,
                Err(_) => PushResult::failure,
            };
            controller
                .metrics
                .pushes
                .get_or_create(&PushLabels { result: label })
                .inc();
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            deleted = dfs_down;
            if failing {
                tracing::info!(pushgateway = %config.url, "pushes to the Pushgateway succeed again");
                failing = false;
            }
        } else if !failing {
            failing = true;
            tracing::warn!(
                pushgateway = %config.url,
                errors = %errors.join("; "),
                "pushing to the Pushgateway failed; retrying every {:?} (counted in \
                 nodewarden_controller_pushgateway_pushes_total{{result=\"failure\"}})",
                config.interval
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> FleetSnapshot {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        FleetSnapshot {
            online: [
                ("s1".to_string(), roles(&["storage"])),
                ("s2".to_string(), roles(&["storage", "ray"])),
            ]
            .into(),
            known: [
                ("s1".to_string(), roles(&["storage"])),
                ("s2".to_string(), roles(&["storage", "ray"])),
                ("s3".to_string(), roles(&["storage"])),
            ]
            .into(),
            devices: vec![
                OnlineDevice {
                    id: 3,
                    total_bytes: 1000,
                    free_bytes: 600,
                },
                OnlineDevice {
                    id: 5,
                    total_bytes: 2000,
                    free_bytes: 1500,
                },
            ],
        }
    }

    fn body<'a>(round: &'a [(&str, GroupAction)], job: &str) -> &'a str {
        match round.iter().find(|(j, _)| *j == job) {
            Some((_, GroupAction::Put(b))) => b,
            other => panic!("{job}: {other:?}"),
        }
    }

    #[test]
    fn disk_figures_under_the_original_names_without_dfs() {
        let round = groups(&snapshot(), "dontpanic", None);
        assert_eq!(
            round.iter().map(|(j, _)| *j).collect::<Vec<_>>(),
            ["online_device_count", "device_leftrs", "nodewarden"]
        );
        assert_eq!(
            body(&round, "online_device_count"),
            "# HELP dontpanic_online_device_count Number of online storage devices.\n\
             # TYPE dontpanic_online_device_count gauge\ndontpanic_online_device_count 2\n"
        );
        let leftrs = body(&round, "device_leftrs");
        assert!(
            leftrs.contains("# TYPE dontpanic_device_leftrs gauge\n"),
            "{leftrs}"
        );
        assert!(
            leftrs.contains("dontpanic_device_leftrs{id=\"3\"} 600\n"),
            "{leftrs}"
        );
        assert!(
            leftrs.contains("dontpanic_device_leftrs{id=\"5\"} 1500"),
            "{leftrs}"
        );
        let fleet = body(&round, "nodewarden");
        for line in [
            "nodewarden_nodes_online{role=\"storage\"} 2\n",
            "nodewarden_nodes_online{role=\"ray\"} 1\n",
            "nodewarden_nodes_online{role=\"other\"} 0\n",
            "nodewarden_nodes_known{role=\"storage\"} 3\n",
            "nodewarden_storage_size_bytes 3000\n",
            "nodewarden_storage_free_bytes 2100\n",
            "nodewarden_storage_devices_online 2\n",
        ] {
            assert!(fleet.contains(line), "{line} missing from\n{fleet}");
        }
        assert!(!fleet.contains("# EOF"));
    }

    #[test]
    fn a_device_that_left_is_absent_from_the_next_group() {
        let mut s = snapshot();
        s.devices.retain(|d| d.id != 5);
        let round = groups(&s, "old", None);
        assert!(body(&round, "online_device_count").contains("old_online_device_count 1\n"));
        let leftrs = body(&round, "device_leftrs");
        assert!(leftrs.contains("old_device_leftrs{id=\"3\"} 600"));
        assert!(!leftrs.contains("id=\"5\""), "{leftrs}");
        // No devices at all: the count is 0 and the leftrs group holds no sample.
        let round = groups(&FleetSnapshot::default(), "dontpanic", None);
        assert!(body(&round, "online_device_count").contains("dontpanic_online_device_count 0\n"));
        assert!(!body(&round, "device_leftrs").contains("dontpanic_device_leftrs{"));
    }

    #[test]
    fn dfs_values_replace_the_original_ones_and_vanish_when_unreadable() {
        let rows = [
            DfsDevice {
                id: 1,
                leftrs: 1024,
            },
            DfsDevice { id: 2, leftrs: -5 },
        ];
        let round = groups(&snapshot(), "dontpanic", Some(Some(&rows)));
        assert!(body(&round, "online_device_count").contains("dontpanic_online_device_count 2\n"));
        let leftrs = body(&round, "device_leftrs");
        assert!(
            leftrs.contains("dontpanic_device_leftrs{id=\"1\"} 1024"),
            "{leftrs}"
        );
        assert!(
            leftrs.contains("dontpanic_device_leftrs{id=\"2\"} -5"),
            "{leftrs}"
        );
        assert!(
            !leftrs.contains("id=\"3\""),
            "disk figures must not mix in: {leftrs}"
        );
        let dfs = body(&round, "dfs");
        assert!(
            dfs.contains("nodewarden_dfs_online_device_count 2\n"),
            "{dfs}"
        );
        assert!(
            dfs.contains("nodewarden_dfs_device_leftrs{id=\"1\"} 1024"),
            "{dfs}"
        );
        // Disk figures stay in the nodewarden group for the drift.
        assert!(body(&round, "nodewarden").contains("nodewarden_storage_free_bytes 2100\n"));

        let round = groups(&snapshot(), "dontpanic", Some(None));
        for job in ["online_device_count", "device_leftrs", "dfs"] {
            assert!(
                round
                    .iter()
                    .any(|(j, a)| *j == job && *a == GroupAction::Delete),
                "{job}: {round:?}"
            );
        }
        assert!(body(&round, "nodewarden").contains("nodewarden_storage_devices_online 2\n"));
    }
}
