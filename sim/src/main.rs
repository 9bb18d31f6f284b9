//! `nodewarden-fleet-sim`: plays N agents in one process against a real controller, with real
//! QUIC and mutual TLS (one certificate per simulated node from the controller's CA), the
//! agent's own link client and session state machine, reports at the normal interval, and
//! answers to commands; then measures what the controller costs and how it behaves: CPU and
//! memory in steady state, a fleet-wide action's completion times, reconnection after a
//! controller SIGKILL, offline detection of agents whose network is cut, and whether every
//! report reached the database. `--json` ends the output with one JSON object of the figures.
//! docs/perf.md records runs; `tests/fleet_sim.rs` runs a CI-sized one.

mod certs;
mod cluster;
mod controller;
mod node;
mod socket;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use nodewarden_agent::config::{ControllerAddress, ControllerLink};
use nodewarden_agent::link::{Client, run_client};
use serde::Serialize;
use tokio::sync::watch;

use crate::controller::Spawned;
use crate::node::{FleetStats, SimNode};

#[derive(Parser, Debug)]
#[command(name = "nodewarden-fleet-sim", version, about)]
struct Args {
    /// How many agents to play.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Seconds between an agent's state reports (the agent's default is 5).
    #[arg(long, default_value_t = 5.0)]
    report_interval: f64,
    /// Seconds of steady state measured (after every agent connected).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Start the controller (`--controller-bin`) on loopback with SQLite (or
    /// `--database-url`) in a fresh directory.
    #[arg(long, conflicts_with = "controller")]
    spawn_controller: bool,
    /// The address of a running controller's link (needs `--ca-dir`, `--api`, `--api-token`).
    #[arg(long)]
    controller: Option<String>,
    /// The controller binary to start.
    #[arg(long, default_value = "target/release/nodewarden-controller")]
    controller_bin: PathBuf,
    /// The spawned controller's database (default: SQLite in its data directory).
    #[arg(long)]
    database_url: Option<String>,
    /// The controller's CA directory (default: `<work-dir>/ca`, made on first use).
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// A running controller's API base URL (with `--controller`).
    #[arg(long)]
    api: Option<String>,
    /// A running controller's API token (with `--controller`).
    #[arg(long, env = "NODEWARDEN_TOKEN")]
    api_token: Option<String>,
    /// The running controller's process id, to measure its CPU and memory (with `--controller`).
    #[arg(long)]
    controller_pid: Option<u32>,
    /// Where the CA, the cached node certificates and each run's files are kept.
    #[arg(long, default_value = "target/fleet-sim")]
    work_dir: PathBuf,
    /// UDP endpoints the agents' connections are spread over (0: one per 250 agents).
    #[arg(long, default_value_t = 0)]
    endpoints: usize,
    /// After the steady state: one fleet-wide action through the API (`stop` or `status` of
    /// the declared service), with each node's completion time.
    #[arg(long, value_parser = ["stop", "status"])]
    fanout: Option<String>,
    /// After that: SIGKILL the controller, restart it, and time until every agent is back.
    #[arg(long, requires = "spawn_controller")]
    restart_controller: bool,
    /// After that: K agents stop answering (their network silenced), and the controller's
    /// offline detection is timed.
    #[arg(long, default_value_t = 0)]
    cut: usize,
    /// Seconds allowed for every agent to connect (and to come back after a restart).
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// The agents' keep-alive interval in milliseconds (default: the agent's).
    #[arg(long, default_value_t = nodewarden_agent::config::DEFAULT_KEEP_ALIVE_MS)]
    keep_alive_ms: u64,
    /// The idle timeout in milliseconds, of the agents and of a spawned controller (default:
    /// the agent's). QUIC uses the lower of the two ends' values.
    #[arg(long, default_value_t = nodewarden_agent::config::DEFAULT_IDLE_TIMEOUT_MS)]
    idle_timeout_ms: u64,
    /// End with one JSON object of the figures.
    #[arg(long)]
    json: bool,
    /// Spawn this many controllers of one cluster sharing `--database-url` (MySQL/MariaDB),
    /// each agent preferring one of them in turn; measure each controller, a fan-out through
    /// the first (forwarded for the others' nodes), and the failover when the first is
    /// SIGKILLed. Replaces the single-controller run.
    #[arg(long, default_value_t = 0, requires = "database_url")]
    cluster: usize,
}

#[derive(Serialize, Default, Debug)]
struct Figures {
    agents: usize,
    connected: usize,
    endpoints: usize,
    report_interval_s: f64,
    keep_alive_ms: u64,
    idle_timeout_ms: u64,
    connect_all_s: f64,
    controller_cpu_fraction: Option<f64>,
    controller_rss_bytes: Option<u64>,
    sim_cpu_fraction: f64,
    sim_rss_bytes: u64,
    steady_s: f64,
    reconnect_all_s: Option<f64>,
    fanout_action: Option<String>,
    fanout_nodes: usize,
    fanout_failed: usize,
    fanout_p50_ms: Option<f64>,
    fanout_p99_ms: Option<f64>,
    fanout_max_ms: Option<f64>,
    cut: usize,
    offline_detected: usize,
    offline_detect_p50_ms: Option<f64>,
    offline_detect_p99_ms: Option<f64>,
    offline_detect_max_ms: Option<f64>,
    false_offline: u64,
    reports_sent: u64,
    reports_persisted: Option<u64>,
    events_online: u64,
    events_offline: u64,
}

pub(crate) fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn say(json: bool, text: &str) {
    if json {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

/// Waits until the number of connected agents satisfies `done`; the seconds it took, or an
/// error after `limit`.
async fn await_connected(
    stats: &FleetStats,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(usize) -> bool,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut changes = stats.connected.subscribe();
    match tokio::time::timeout(limit, changes.wait_for(|&c| done(c))).await {
        Ok(Ok(_)) => Ok(start.elapsed().as_secs_f64()),
        _ => bail!(
            "{what}: {} agents connected after {limit:?}",
            *stats.connected.borrow()
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NODEWARDEN_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.cut > args.agents {
        bail!("--cut {} is more than --agents {}", args.cut, args.agents);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if args.cluster > 0 {
        return runtime.block_on(cluster::run(cluster::Options {
            agents: args.agents,
            controllers: args.cluster,
            database_url: args.database_url.clone().unwrap_or_default(),
            controller_bin: args.controller_bin.clone(),
            work_dir: args.work_dir.clone(),
            report_interval: args.report_interval,
            duration: args.duration,
            keep_alive_ms: args.keep_alive_ms,
            idle_timeout_ms: args.idle_timeout_ms,
            connect_timeout: args.connect_timeout,
            json: args.json,
        }));
    }
    runtime.block_on(run(args))
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    let json = args.json;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    // The controller's config names its directories; relative ones would be read from there.
    args.work_dir = std::fs::canonicalize(&args.work_dir)
        .with_context(|| format!("resolving {}", args.work_dir.display()))?;
    let ca_dir = args.ca_dir.clone().unwrap_or(args.work_dir.join("ca"));
    let ca_dir =
        std::path::absolute(&ca_dir).with_context(|| format!("resolving {}", ca_dir.display()))?;
    if args.spawn_controller {
        certs::ensure_ca(&args.controller_bin, &ca_dir)?;
    }
    let issuing = Instant::now();
    let (ca_dir2, cache, n) = (ca_dir.clone(), args.work_dir.join("certs"), args.agents);
    let certs = tokio::task::spawn_blocking(move || certs::node_certs(&ca_dir2, &cache, n))
        .await
        .context("issuing thread")??;
    say(
        json,
        &format!(
            "== {} node certificates ready in {:.1} s",
            certs.len(),
            issuing.elapsed().as_secs_f64()
        ),
    );
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem"))
        .with_context(|| format!("reading {}", ca_dir.join("ca.pem").display()))?;

    // The controller.
    // The last run's files stay for a look until the next run.
    let run_dir = args.work_dir.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let mut spawned = None;
    let (link_addr, api, token, pid) = if args.spawn_controller {
        let c = Spawned::start(
            &args.controller_bin,
            &run_dir,
            &ca_dir,
            args.database_url.as_deref(),
            args.idle_timeout_ms,
            "",
        )?;
        let out = (
            c.link.to_string(),
            format!("http://{}", c.http),
            c.api_token()?,
            c.pid(),
        );
        say(
            json,
            &format!("== controller started: link {}, API {}", out.0, out.1),
        );
        spawned = Some(c);
        out
    } else {
        let link = args
            .controller
            .clone()
            .context("give --spawn-controller or --controller ADDR")?;
        (
            link,
            args.api.clone().unwrap_or_default(),
            args.api_token.clone().unwrap_or_default(),
            args.controller_pid,
        )
    };
    let mut figures = Figures {
        agents: args.agents,
        report_interval_s: args.report_interval,
        keep_alive_ms: args.keep_alive_ms,
        idle_timeout_ms: args.idle_timeout_ms,
        cut: args.cut,
        ..Figures::default()
    };

    // The agents: spread over endpoints; the ones to be cut on endpoints of their own.
    let per_endpoint = 250;
    let endpoints = if args.endpoints > 0 {
        args.endpoints
    } else {
        args.agents.div_ceil(per_endpoint)
    }
    .max(1);
    figures.endpoints = endpoints;
    let never_cut = Arc::new(AtomicBool::new(false));
    let cut_flag = Arc::new(AtomicBool::new(false));
    let mut pool = Vec::new();
    for _ in 0..endpoints {
        pool.push(socket::endpoint(never_cut.clone()).context("binding a UDP endpoint")?);
    }
    let cut_endpoint = if args.cut > 0 {
        Some(socket::endpoint(cut_flag.clone()).context("binding a UDP endpoint")?)
    } else {
        None
    };
    let link = ControllerLink {
        controllers: vec![ControllerAddress::new(&link_addr, "127.0.0.1")],
        prefer: None,
        ca_file: PathBuf::new(),
        cert_file: PathBuf::new(),
        key_file: PathBuf::new(),
        keep_alive: Duration::from_millis(args.keep_alive_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        report_interval: Duration::from_secs_f64(args.report_interval),
        reconnect_max: Duration::from_millis(nodewarden_agent::config::DEFAULT_RECONNECT_MAX_MS),
    };
    let stats = Arc::new(FleetStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut nodes = Vec::with_capacity(args.agents);
    let mut tasks = Vec::with_capacity(args.agents);
    let jitter =
        Duration::from_secs_f64(args.report_interval / 100.0).min(Duration::from_millis(50));
    let started = Instant::now();
    for (i, cert) in certs.iter().enumerate() {
        // The last `cut` agents are the ones silenced.
        let is_cut = i >= args.agents - args.cut;
        let (endpoint, flag) = match (&cut_endpoint, is_cut) {
            (Some(e), true) => (e.clone(), cut_flag.clone()),
            _ => (pool[i % endpoints].clone(), never_cut.clone()),
        };
        let client = Client::new(link.clone(), &ca_pem, &cert.cert_pem, &cert.key_pem)
            .with_context(|| format!("TLS configuration of {}", cert.name))?
            .with_endpoint(endpoint);
        let node = Arc::new(SimNode::new(
            cert.name.clone(),
            (i + 1) as u32,
            jitter,
            flag,
            stats.clone(),
        ));
        nodes.push(node.clone());
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            run_client(&client, node, stop).await;
        }));
    }
    drop(certs);
    let limit = Duration::from_secs_f64(args.connect_timeout);
    figures.connect_all_s =
        await_connected(&stats, limit, "connecting", |c| c >= args.agents).await?;
    say(
        json,
        &format!(
            "== {} agents connected in {:.1} s over {endpoints} endpoints",
            args.agents,
            started.elapsed().as_secs_f64()
        ),
    );

    // Steady state: one report period to settle, then the measured window.
    tokio::time::sleep(Duration::from_secs_f64(args.report_interval)).await;
    let steady_from_ms = now_ms();
    let sim_pid = std::process::id();
    let t0 = Instant::now();
    let controller_cpu0 = pid.map(controller::cpu_seconds).transpose()?;
    let sim_cpu0 = controller::cpu_seconds(sim_pid)?;
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    figures.steady_s = elapsed;
    if let (Some(p), Some(c0)) = (pid, controller_cpu0) {
        figures.controller_cpu_fraction = Some((controller::cpu_seconds(p)? - c0) / elapsed);
        figures.controller_rss_bytes = Some(controller::rss_bytes(p)?);
    }
    figures.sim_cpu_fraction = (controller::cpu_seconds(sim_pid)? - sim_cpu0) / elapsed;
    figures.sim_rss_bytes = controller::rss_bytes(sim_pid)?;
    figures.connected = *stats.connected.borrow();
    say(
        json,
        &format!(
            "== steady state {elapsed:.1} s: controller {} of a core, {} MiB resident; simulator {:.3} of a core",
            figures
                .controller_cpu_fraction
                .map_or("?".into(), |f| format!("{f:.3}")),
            figures
                .controller_rss_bytes
                .map_or("?".into(), |b| (b >> 20).to_string()),
            figures.sim_cpu_fraction
        ),
    );

    if let Some(action) = &args.fanout {
        let (api, token, action) = (api.clone(), token.clone(), action.clone());
        let act = action.clone();
        let (times, failed) =
            tokio::task::spawn_blocking(move || controller::fanout(&api, &token, &act))
                .await
                .context("fan-out thread")??;
        let mut ms: Vec<f64> = times
            .iter()
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        figures.fanout_action = Some(action.clone());
        figures.fanout_nodes = ms.len();
        figures.fanout_failed = failed;
        figures.fanout_p50_ms = quantile(&ms, 0.5);
        figures.fanout_p99_ms = quantile(&ms, 0.99);
        figures.fanout_max_ms = ms.last().copied();
        say(
            json,
            &format!(
                "== fan-out {action}: {} nodes answered ({failed} not ok), p50 {:.0} ms, p99 {:.0} ms",
                ms.len(),
                figures.fanout_p50_ms.unwrap_or(0.0),
                figures.fanout_p99_ms.unwrap_or(0.0)
            ),
        );
    }

    // Windows in which offline transitions are expected (a controller restart).
    let mut expected_offline: Vec<(u64, u64)> = Vec::new();
    if args.restart_controller
        && let Some(c) = spawned.as_mut()
    {
        let before: Vec<u64> = nodes.iter().map(|n| n.sessions()).collect();
        let killed = Instant::now();
        let killed_ms = now_ms();
        c.kill_and_restart()?;
        // Back: every agent has noticed the loss (idle timeout) and had a new session since,
        // with its backoff. Looked at again whenever an agent connects or disconnects.
        let mut changes = stats.connected.subscribe();
        loop {
            let back = nodes
                .iter()
                .zip(&before)
                .filter(|(n, b)| n.sessions() > **b && n.is_connected())
                .count();
            if back == args.agents {
                break;
            }
            let left = limit.saturating_sub(killed.elapsed());
            if !matches!(
                tokio::time::timeout(left, changes.changed()).await,
                Ok(Ok(()))
            ) {
                bail!(
                    "reconnecting after the restart: {back} of {} agents back after {limit:?}",
                    args.agents
                );
            }
        }
        figures.reconnect_all_s = Some(killed.elapsed().as_secs_f64());
        expected_offline.push((killed_ms, now_ms()));
        say(
            json,
            &format!(
                "== controller SIGKILLed and restarted: every agent back in {:.1} s",
                killed.elapsed().as_secs_f64()
            ),
        );
    }

    let mut cut_at_ms = None;
    if args.cut > 0 {
        // Two report periods of calm first: a fan-out's or a restart's burst inflates the
        // connections' RTT estimates, and QUIC's idle timeout is at least three PTOs, so a cut
        // right after a burst measures the burst, not the steady state.
        tokio::time::sleep(Duration::from_secs_f64(2.0 * args.report_interval)).await;
        cut_at_ms = Some(now_ms());
        cut_flag.store(true, Ordering::Relaxed);
        // The cut agents notice it too (their idle timeout).
        let target = args.agents - args.cut;
        await_connected(&stats, limit, "the cut agents' own timeout", |c| {
            c <= target
        })
        .await?;
        // The controller's own detection is read from its events below; give it time past its
        // idle timeout.
        tokio::time::sleep(Duration::from_millis(args.idle_timeout_ms * 2)).await;
        // Restored, so the cut agents report again before the end.
        cut_flag.store(false, Ordering::Relaxed);
        await_connected(&stats, limit, "reconnecting after the cut", |c| {
            c >= args.agents
        })
        .await?;
        say(json, &format!("== {} agents cut and restored", args.cut));
    }

    // A last report from everyone; then the agents fall quiet (no more reports), so every report
    // sent has arrived before the orderly end: agents close, the controller flushes.
    tokio::time::sleep(Duration::from_secs_f64(args.report_interval + 0.5)).await;
    stats.quiet.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.report_interval.min(5.0) + 1.0)).await;
    let checks_end_ms = now_ms();
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    figures.reports_sent = stats.reports_sent.load(Ordering::Relaxed);

    let db_url = match spawned.as_mut() {
        Some(c) => {
            // Agents closed; SIGTERM: the controller records them offline and flushes.
            c.stop();
            Some(args.database_url.clone().unwrap_or(c.sqlite_url()))
        }
        None => args.database_url.clone(),
    };
    if let Some(url) = db_url {
        let cut_names: Vec<String> = nodes[args.agents - args.cut..]
            .iter()
            .map(|n| n.name.clone())
            .collect();
        let windows = Windows {
            steady_from_ms,
            checks_end_ms,
            cut_at_ms,
            expected_offline,
        };
        read_database(&url, &mut figures, &windows, &cut_names)
            .await
            .with_context(|| format!("reading the controller's database {url}"))?;
    }
    let summary = serde_json::to_string(&figures)?;
    say(json, &format!("== figures: {figures:#?}"));
    if json {
        println!("{summary}");
    }
    Ok(())
}

/// When things happened, to judge the store's events.
struct Windows {
    steady_from_ms: u64,
    /// The orderly end began (every node then goes offline, as it should).
    checks_end_ms: u64,
    cut_at_ms: Option<u64>,
    /// A controller restart: its offline transitions are expected.
    expected_offline: Vec<(u64, u64)>,
}

/// Reads the store's final state: the reports it holds, the offline detection times of cut
/// agents, and offline transitions of agents when none was due (false offlines).
async fn read_database(
    url: &str,
    figures: &mut Figures,
    w: &Windows,
    cut_names: &[String],
) -> anyhow::Result<()> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url).await?;
    let persisted: i64 =
        sqlx::query("SELECT CAST(COALESCE(SUM(free_bytes), 0) AS SIGNED) FROM storage_devices")
            .fetch_one(&mut conn)
            .await?
            .try_get(0)?;
    figures.reports_persisted = Some(persisted as u64);
    let rows = sqlx::query(
        "SELECT node_id, kind, at_ms FROM events WHERE kind IN ('online', 'offline') \
         AND at_ms >= ? AND at_ms < ?",
    )
    .bind(w.steady_from_ms as i64)
    .bind(w.checks_end_ms as i64)
    .fetch_all(&mut conn)
    .await?;
    let cut: std::collections::HashSet<&str> = cut_names.iter().map(String::as_str).collect();
    let mut first_offline: std::collections::HashMap<String, u64> = Default::default();
    for r in rows {
        let node: String = r.try_get(0)?;
        let kind: String = r.try_get(1)?;
        let at = r.try_get::<i64, _>(2)? as u64;
        if kind == "online" {
            figures.events_online += 1;
            continue;
        }
        figures.events_offline += 1;
        let expected = w
            .expected_offline
            .iter()
            .any(|(a, b)| (*a..=*b).contains(&at))
            || (cut.contains(node.as_str()) && w.cut_at_ms.is_some_and(|c| at >= c));
        if !expected {
            figures.false_offline += 1;
            continue;
        }
        if cut.contains(node.as_str()) && w.cut_at_ms.is_some_and(|c| at >= c) {
            let e = first_offline.entry(node).or_insert(at);
            *e = (*e).min(at);
        }
    }
    let mut detect: Vec<f64> = match w.cut_at_ms {
        Some(c) => first_offline.values().map(|at| (at - c) as f64).collect(),
        None => Vec::new(),
    };
    detect.sort_by(f64::total_cmp);
    figures.offline_detected = detect.len();
    figures.offline_detect_p50_ms = quantile(&detect, 0.5);
    figures.offline_detect_p99_ms = quantile(&detect, 0.99);
    figures.offline_detect_max_ms = detect.last().copied();
    Ok(())
}
