//! `supervisord` (deprecated in node_exporter, still served by 1.12.1): each supervised
//! process's state, exit status, whether it is up and its start time, from one XML-RPC call of
//! `supervisor.getAllProcessInfo` per scrape to `--collector.supervisord.url` (else
//! `$SUPERVISORD_URL`, else `http://localhost:9001/RPC2`), over TCP or, for a `unix://` URL,
//! supervisord's unix socket, as node_exporter does with mattn/go-xmlrpc ([`xmlrpc`]).
//!
//! Decisions:
//! - `node_supervisord_start_time_seconds` is a counter without the `_total` suffix, as
//!   node_exporter declares it.
//! - As node_exporter, the fields of one process's struct carry over to the next process's when
//!   that one lacks them. A field of an unexpected XML-RPC type is ignored (left as it was)
//!   where node_exporter's type assertion would panic. `https://` URLs are refused at the
//!   scrape (no TLS client here; supervisord serves plain HTTP).
//! - Samples come sorted by group and name, as node_exporter's registry writes them.

use clap::{Arg, Command};

use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

mod xmlrpc;

pub static REGISTRATION: Registration = Registration {
    name: "supervisord",
    default_enabled: false,
    flags,
    build,
};

const URL: &str = "collector.supervisord.url";
const DEFAULT_URL: &str = "http://localhost:9001/RPC2";

fn flags(command: Command) -> Command {
    command.arg(
        Arg::new(URL)
            .long(URL)
            .default_value(DEFAULT_URL)
            .help("XML RPC endpoint."),
    )
}

/// kingpin's precedence: the flag, else `$SUPERVISORD_URL`, else the default.
fn url(ctx: &BuildContext<'_>, env: Option<String>) -> String {
    let given = ctx.matches.value_source(URL) == Some(clap::parser::ValueSource::CommandLine);
    match (given, env) {
        (false, Some(env)) => env,
        _ => ctx.flag(URL).unwrap_or(DEFAULT_URL).to_string(),
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let url = url(ctx, std::env::var("SUPERVISORD_URL").ok());
    tracing::warn!(
        "the supervisord collector is deprecated and will be removed in the next major version release"
    );
    Ok(Box::new(SupervisordCollector {
        endpoint: xmlrpc::Endpoint::parse(&url),
        url,
    }))
}

struct SupervisordCollector {
    url: String,
    /// A URL that does not parse fails every scrape, as node_exporter's client does.
    endpoint: Result<xmlrpc::Endpoint, xmlrpc::XmlRpcError>,
}

/// node_exporter's `info` struct: the fields it reads.
#[derive(Default, Clone)]
struct Info {
    name: String,
    group: String,
    start: i64,
    state: i64,
    exit_status: i64,
}

/// supervisord's STARTING, RUNNING and STOPPING.
fn is_running(state: i64) -> bool {
    matches!(state, 10 | 20 | 40)
}

#[derive(Debug, thiserror::Error)]
#[error("unable to call supervisord: {0}")]
struct CallFailed(#[source] xmlrpc::XmlRpcError);

#[derive(Debug, thiserror::Error)]
#[error("supervisor.getAllProcessInfo returned {0}, not an array of structs")]
struct NotAnArray(&'static str);

fn processes(value: xmlrpc::Value) -> Result<Vec<Info>, NotAnArray> {
    use xmlrpc::Value;
    let Value::Array(items) = value else {
        return Err(NotAnArray("a non-array"));
    };
    let mut info = Info::default();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Struct(members) = item else {
            return Err(NotAnArray("an array with a non-struct"));
        };
        for (key, value) in members {
            match (key.as_str(), value) {
                ("name", Value::Str(s)) => info.name = s,
                ("group", Value::Str(s)) => info.group = s,
                ("start", Value::Int(i)) => info.start = i,
                ("state", Value::Int(i)) => info.state = i,
                ("exitstatus", Value::Int(i)) => info.exit_status = i,
                ("name" | "group" | "start" | "state" | "exitstatus", other) => {
                    tracing::debug!(field = key, value = ?other, "unexpected supervisord field type");
                }
                _ => {}
            }
        }
        out.push(info.clone());
    }
    Ok(out)
}

impl Collector for SupervisordCollector {
    fn update(
        &mut self,
        _ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let fail = |e: std::io::Error| CollectorError::io(self.url.as_str(), e);
        let endpoint = self
            .endpoint
            .as_ref()
            .map_err(|e| fail(std::io::Error::other(e.to_string())))?;
        let value = xmlrpc::call(endpoint, "supervisor.getAllProcessInfo")
            .map_err(|e| fail(std::io::Error::other(CallFailed(e))))?;
        let mut procs = processes(value).map_err(|e| fail(std::io::Error::other(e)))?;
        if procs.is_empty() {
            return Ok(());
        }
        procs.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
        type Field = fn(&Info) -> Option<f64>;
        let families: [(&str, &str, Kind, Field); 4] = [
            (
                "node_supervisord_exit_status",
                "Process Exit Status",
                Kind::Gauge,
                |p| Some(p.exit_status as f64),
            ),
            (
                "node_supervisord_start_time_seconds",
                "Process start time",
                Kind::Counter,
                |p| is_running(p.state).then_some(p.start as f64),
            ),
            (
                "node_supervisord_state",
                "Process State",
                Kind::Gauge,
                |p| Some(p.state as f64),
            ),
            ("node_supervisord_up", "Process Up", Kind::Gauge, |p| {
                Some(if is_running(p.state) { 1.0 } else { 0.0 })
            }),
        ];
        for (name, help, kind, value) in families {
            if !procs.iter().any(|p| value(p).is_some()) {
                continue;
            }
            let mut family = out.family(name, help, kind)?;
            for p in &procs {
                if let Some(v) = value(p) {
                    family.sample(&[("group", &p.group), ("name", &p.name)], v)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
