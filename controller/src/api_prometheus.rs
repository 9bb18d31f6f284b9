//! `GET /api/v1/nodes/{name}/prometheus`: the node page's charts from Prometheus when
//! `[prometheus] url` is configured — the last hour of load, memory, root disk and storage free
//! of the node, from the series its discovery labels carry (`node="<name>"`). The queries are
//! fixed here ([`queries`]); the client names only the node (checked as a node name, so it
//! cannot change a query). At most [`MAX_AT_ONCE`] requests to Prometheus at a time, each within
//! [`TIMEOUT`]; every answer is folded onto one time grid ([`fold`], a plain function).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub use crate::wire::PrometheusCharts;

/// The window charted, and its step.
pub const WINDOW_S: u64 = 3600;
pub const STEP_S: u64 = 30;
/// Requests to Prometheus in flight at once (each node page asks every few seconds).
pub const MAX_AT_ONCE: usize = 4;
/// Each query's limit.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Storage series kept (one per device).
const MAX_DEVICES: usize = 32;

/// The charts' queries for `node` (a checked node name): `(chart, PromQL)`.
pub fn queries(node: &str) -> [(&'static str, String); 4] {
    let n = format!("node=\"{node}\"");
    [
        ("load1", format!("node_load1{{{n}}}")),
        (
            "memory",
            format!(
                "100 * (1 - node_memory_MemAvailable_bytes{{{n}}} / node_memory_MemTotal_bytes{{{n}}})"
            ),
        ),
        (
            "disk",
            format!(
                "100 * (1 - node_filesystem_avail_bytes{{{n},mountpoint=\"/\"}} / node_filesystem_size_bytes{{{n},mountpoint=\"/\"}})"
            ),
        ),
        (
            "storage",
            format!(
                "100 * nodewarden_storage_device_free_bytes{{{n}}} / nodewarden_storage_device_size_bytes{{{n}}}"
            ),
        ),
    ]
}

/// Prometheus's `query_range` answer (the fields read).
#[derive(Debug, Deserialize)]
pub struct RangeAnswer {
    data: RangeData,
}

#[derive(Debug, Deserialize)]
struct RangeData {
    result: Vec<RangeSeries>,
}

#[derive(Debug, Deserialize)]
struct RangeSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// Folds the four answers (in [`queries`]' order) onto the grid `start..=end` by `STEP_S`.
pub fn fold(node: &str, start: u64, end: u64, answers: [RangeAnswer; 4]) -> PrometheusCharts {
    let times: Vec<u64> = (start..=end).step_by(STEP_S as usize).collect();
    let slot = |t: f64| -> Option<usize> {
        let t = t.round() as i64 - start as i64;
        (t >= 0 && t % STEP_S as i64 == 0)
            .then(|| (t / STEP_S as i64) as usize)
            .filter(|i| *i < times.len())
    };
    let line = |series: &RangeSeries| {
        let mut out = vec![None; times.len()];
        for (t, v) in &series.values {
            if let (Some(i), Ok(v)) = (slot(*t), v.parse::<f64>()) {
                out[i] = v.is_finite().then_some(v);
            }
        }
        out
    };
    let [load, memory, disk, storage] = answers;
    let first = |a: &RangeAnswer| {
        a.data
            .result
            .first()
            .map(line)
            .unwrap_or_else(|| vec![None; times.len()])
    };
    let mut devices = BTreeMap::new();
    for s in storage.data.result.iter().take(MAX_DEVICES) {
        let id = s.metric.get("id").cloned().unwrap_or_default();
        devices.insert(id, line(s));
    }
    PrometheusCharts {
        node: node.to_string(),
        load1: first(&load),
        memory: first(&memory),
        disk: first(&disk),
        storage: devices,
        times,
    }
}

/// Where Prometheus is, and the permits to ask it.
pub struct PrometheusSource {
    pub url: Option<String>,
    permits: tokio::sync::Semaphore,
}

impl PrometheusSource {
    pub fn new(url: Option<String>) -> PrometheusSource {
        PrometheusSource {
            url,
            permits: tokio::sync::Semaphore::new(MAX_AT_ONCE),
        }
    }
}

pub fn routes(source: Arc<PrometheusSource>) -> Router {
    Router::new()
        .route("/api/v1/nodes/{name}/prometheus", get(charts))
        .with_state(source)
}

type Refusal = (StatusCode, Json<serde_json::Value>);

fn refusal(status: StatusCode, message: String) -> Refusal {
    (status, Json(serde_json::json!({ "error": message })))
}

async fn charts(
    State(source): State<Arc<PrometheusSource>>,
    Path(name): Path<String>,
) -> Result<Json<PrometheusCharts>, Refusal> {
    let Some(url) = source.url.clone() else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "no [prometheus] url is configured on this controller".into(),
        ));
    };
    nodewarden_shared::name::validate_node_name(&name)
        .map_err(|e| refusal(StatusCode::BAD_REQUEST, format!("node {name:?}: {e}")))?;
    let Ok(_permit) = source.permits.try_acquire() else {
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_AT_ONCE} Prometheus queries already under way; try again"),
        ));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let end = now - now % STEP_S;
    let start = end.saturating_sub(WINDOW_S);
    let node = name.clone();
    let answers = tokio::task::spawn_blocking(move || -> Result<[RangeAnswer; 4], String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        let ask = |query: &str| -> Result<RangeAnswer, String> {
            let base = format!("{}/api/v1/query_range", url.trim_end_matches('/'));
            let mut answer = agent
                .get(&base)
                .query("query", query)
                .query("start", start.to_string())
                .query("end", end.to_string())
                .query("step", STEP_S.to_string())
                .call()
                .map_err(|e| format!("asking Prometheus at {url}: {e}"))?;
            let text = answer
                .body_mut()
                .with_config()
                .limit(8 << 20)
                .read_to_string()
                .map_err(|e| format!("reading Prometheus's answer at {url}: {e}"))?;
            serde_json::from_str::<RangeAnswer>(&text)
                .map_err(|e| format!("Prometheus at {url} answered something unexpected: {e}"))
        };
        let [a, b, c, d] = queries(&node);
        Ok([ask(&a.1)?, ask(&b.1)?, ask(&c.1)?, ask(&d.1)?])
    })
    .await
    .map_err(|e| refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| refusal(StatusCode::BAD_GATEWAY, e))?;
    Ok(Json(fold(&name, start, end, answers)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: serde_json::Value) -> RangeAnswer {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn queries_name_only_the_node() {
        let q = queries("s1");
        assert_eq!(q[0], ("load1", "node_load1{node=\"s1\"}".to_string()));
        assert!(q.iter().all(|(_, e)| e.matches("node=\"s1\"").count() >= 1));
        assert!(q[2].1.contains("mountpoint=\"/\""));
    }

    #[test]
    fn answers_fold_onto_one_grid_with_gaps() {
        let empty = || answer(serde_json::json!({"data": {"result": []}}));
        let load = answer(serde_json::json!({"data": {"result": [
            {"metric": {}, "values": [[1000, "0.5"], [1060, "0.75"], [1075, "9"], [2000, "NaN"]]}
        ]}}));
        let storage = answer(serde_json::json!({"data": {"result": [
            {"metric": {"id": "3"}, "values": [[1030, "40"]]},
            {"metric": {"id": "1"}, "values": [[1000, "90"]]}
        ]}}));
        let c = fold("s1", 1000, 1090, [load, empty(), empty(), storage]);
        assert_eq!(c.times, [1000, 1030, 1060, 1090]);
        // Off-grid (1075) and out-of-window (2000) samples are dropped.
        assert_eq!(c.load1, [Some(0.5), None, Some(0.75), None]);
        assert_eq!(c.memory, [None; 4]);
        assert_eq!(c.storage["3"], [None, Some(40.0), None, None]);
        assert_eq!(c.storage["1"], [Some(90.0), None, None, None]);
        assert_eq!(c.storage.len(), 2);
    }
}
