//! `--cluster N`: the simulated fleet against N controllers of one cluster sharing one
//! MySQL/MariaDB database (issue 16). Each controller gets a cluster id, a peer endpoint and its
//! peer certificate; agent i lists every controller and prefers controller i mod N. Measured:
//! every controller's CPU and memory in steady state; a fleet-wide `status` through the first
//! controller, split between the nodes it holds (run over its own links) and the others'
//! (forwarded to their holder over mutual TLS); then the first controller is SIGKILLed and each
//! of its agents' time to a new session on another controller is recorded.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nodewarden_agent::config::{ControllerAddress, ControllerLink};
use nodewarden_agent::link::{Client, run_client};
use serde::Serialize;
use tokio::sync::watch;

use crate::controller::{self, Spawned};
use crate::node::{FleetStats, SimNode};
use crate::{quantile, say};

pub struct Options {
    pub agents: usize,
    pub controllers: usize,
    pub database_url: String,
    pub controller_bin: PathBuf,
    pub work_dir: PathBuf,
    pub report_interval: f64,
    pub duration: f64,
    pub keep_alive_ms: u64,
    pub idle_timeout_ms: u64,
    pub connect_timeout: f64,
    pub json: bool,
}

#[derive(Serialize, Default, Debug)]
struct ControllerFigures {
    id: String,
    agents_preferring: usize,
    cpu_fraction: f64,
    rss_bytes: u64,
}

#[derive(Serialize, Default, Debug)]
struct Figures {
    agents: usize,
    controllers: Vec<ControllerFigures>,
    connect_all_s: f64,
    steady_s: f64,
    sim_cpu_fraction: f64,
    fanout_nodes: usize,
    fanout_failed: usize,
    local_p50_ms: Option<f64>,
    local_p99_ms: Option<f64>,
    forwarded_p50_ms: Option<f64>,
    forwarded_p99_ms: Option<f64>,
    forwarded_max_ms: Option<f64>,
    failover_agents: usize,
    failover_p50_ms: Option<f64>,
    failover_p99_ms: Option<f64>,
    failover_max_ms: Option<f64>,
}

fn ms_sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    if o.controllers < 2 {
        bail!("--cluster needs at least 2 controllers");
    }
    if !o.database_url.starts_with("mysql://") {
        bail!("--cluster needs --database-url mysql://… (controllers share it)");
    }
    std::fs::create_dir_all(&o.work_dir)?;
    let work = std::fs::canonicalize(&o.work_dir)?;
    let ca_dir = work.join("ca");
    crate::certs::ensure_ca(&o.controller_bin, &ca_dir)?;
    let (ca2, cache, n) = (ca_dir.clone(), work.join("certs"), o.agents);
    let certs = tokio::task::spawn_blocking(move || crate::certs::node_certs(&ca2, &cache, n))
        .await
        .context("issuing thread")??;
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem"))?;
    let run_dir = work.join("cluster-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let mut spawned = Vec::new();
    for i in 0..o.controllers {
        let id = format!("c{}", i + 1);
        let status = std::process::Command::new(&o.controller_bin)
            .args(["ca", "issue-controller", &id, "--san", "127.0.0.1", "--dir"])
            .arg(&ca_dir)
            .arg("--out-dir")
            .arg(&ca_dir)
            .stdout(std::process::Stdio::null())
            .status()
            .context("ca issue-controller")?;
        if !status.success() {
            bail!("ca issue-controller {id} failed");
        }
        let peer = controller::free_port()?;
        let dir = run_dir.join(&id);
        std::fs::create_dir_all(&dir)?;
        spawned.push(Spawned::start(
            &o.controller_bin,
            &dir,
            &ca_dir,
            Some(&o.database_url),
            o.idle_timeout_ms,
            &format!("[cluster]\nid = \"{id}\"\npeer_listen = \"127.0.0.1:{peer}\"\n"),
        )?);
    }
    say(o.json, &format!("== {} controllers started", o.controllers));

    let addresses: Vec<ControllerAddress> = spawned
        .iter()
        .map(|c| ControllerAddress::new(&c.link.to_string(), "127.0.0.1"))
        .collect();
    let stats = Arc::new(FleetStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let never_cut = Arc::new(AtomicBool::new(false));
    let endpoints = o.agents.div_ceil(250).max(1);
    let mut pool = Vec::new();
    for _ in 0..endpoints {
        pool.push(crate::socket::endpoint(never_cut.clone())?);
    }
    let jitter = Duration::from_secs_f64(o.report_interval / 100.0).min(Duration::from_millis(50));
    let mut nodes = Vec::new();
    let mut tasks = Vec::new();
    let started = Instant::now();
    for (i, cert) in certs.iter().enumerate() {
        let link = ControllerLink {
            controllers: addresses.clone(),
            prefer: Some(i % o.controllers),
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            keep_alive: Duration::from_millis(o.keep_alive_ms),
            idle_timeout: Duration::from_millis(o.idle_timeout_ms),
            report_interval: Duration::from_secs_f64(o.report_interval),
            reconnect_max: Duration::from_millis(
                nodewarden_agent::config::DEFAULT_RECONNECT_MAX_MS,
            ),
        };
        let client = Client::new(link, &ca_pem, &cert.cert_pem, &cert.key_pem)?
            .with_endpoint(pool[i % endpoints].clone());
        let node = Arc::new(SimNode::new(
            cert.name.clone(),
            (i + 1) as u32,
            jitter,
            never_cut.clone(),
            stats.clone(),
        ));
        nodes.push(node.clone());
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            run_client(&client, node, stop).await;
        }));
    }
    let limit = Duration::from_secs_f64(o.connect_timeout);
    let mut changes = stats.connected.subscribe();
    tokio::time::timeout(limit, changes.wait_for(|&c| c >= o.agents))
        .await
        .map_err(|_| anyhow::anyhow!("not every agent connected within {limit:?}"))??;
    let mut figures = Figures {
        agents: o.agents,
        connect_all_s: started.elapsed().as_secs_f64(),
        ..Figures::default()
    };
    say(
        o.json,
        &format!(
            "== {} agents connected in {:.1} s",
            o.agents, figures.connect_all_s
        ),
    );

    // Steady state: every controller measured over the same window.
    tokio::time::sleep(Duration::from_secs_f64(o.report_interval)).await;
    let pids: Vec<u32> = spawned.iter().filter_map(Spawned::pid).collect();
    let cpu0: Vec<f64> = pids
        .iter()
        .map(|p| controller::cpu_seconds(*p))
        .collect::<anyhow::Result<_>>()?;
    let sim0 = controller::cpu_seconds(std::process::id())?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    figures.steady_s = elapsed;
    figures.sim_cpu_fraction = (controller::cpu_seconds(std::process::id())? - sim0) / elapsed;
    for (i, (pid, c0)) in pids.iter().zip(&cpu0).enumerate() {
        figures.controllers.push(ControllerFigures {
            id: format!("c{}", i + 1),
            agents_preferring: (0..o.agents).filter(|a| a % o.controllers == i).count(),
            cpu_fraction: (controller::cpu_seconds(*pid)? - c0) / elapsed,
            rss_bytes: controller::rss_bytes(*pid)?,
        });
    }
    for c in &figures.controllers {
        say(
            o.json,
            &format!(
                "== {}: {:.3} of a core, {} MiB resident",
                c.id,
                c.cpu_fraction,
                c.rss_bytes >> 20
            ),
        );
    }

    // A fleet-wide status through c1: its own nodes over its links, the others forwarded.
    let first = &spawned[0];
    let (api, token) = (format!("http://{}", first.http), first.api_token()?);
    let (times, failed) =
        tokio::task::spawn_blocking(move || controller::fanout(&api, &token, "status"))
            .await
            .context("fan-out thread")??;
    let index_of = |name: &str| nodes.iter().position(|n| n.name == name);
    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    for (node, d) in &times {
        let ms = d.as_secs_f64() * 1000.0;
        match index_of(node) {
            Some(i) if i % o.controllers == 0 => local.push(ms),
            Some(_) => forwarded.push(ms),
            None => {}
        }
    }
    let (local, forwarded) = (ms_sorted(local), ms_sorted(forwarded));
    figures.fanout_nodes = times.len();
    figures.fanout_failed = failed;
    figures.local_p50_ms = quantile(&local, 0.5);
    figures.local_p99_ms = quantile(&local, 0.99);
    figures.forwarded_p50_ms = quantile(&forwarded, 0.5);
    figures.forwarded_p99_ms = quantile(&forwarded, 0.99);
    figures.forwarded_max_ms = forwarded.last().copied();
    say(
        o.json,
        &format!(
            "== status through c1: {} nodes ({failed} not ok); local p50 {:.0} ms; forwarded p50 {:.0} / p99 {:.0} ms",
            times.len(),
            figures.local_p50_ms.unwrap_or(0.0),
            figures.forwarded_p50_ms.unwrap_or(0.0),
            figures.forwarded_p99_ms.unwrap_or(0.0)
        ),
    );

    // SIGKILL c1: each of its agents' time to a new session elsewhere. Its agents are the
    // nodes whose lease it holds (an agent that could not reach its preferred controller in
    // the first storm is linked elsewhere).
    let held = held_by(&o.database_url, "c1").await?;
    let theirs: Vec<usize> = (0..o.agents)
        .filter(|a| held.contains(&nodes[*a].name))
        .collect();
    let before: Vec<u64> = theirs.iter().map(|i| nodes[*i].sessions()).collect();
    let mut changes = stats.connected.subscribe();
    let killed = Instant::now();
    spawned[0].stop_hard();
    let mut back: Vec<Option<f64>> = vec![None; theirs.len()];
    while back.iter().any(Option::is_none) {
        for (k, i) in theirs.iter().enumerate() {
            if back[k].is_none() && nodes[*i].sessions() > before[k] && nodes[*i].is_connected() {
                back[k] = Some(killed.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let left = limit.saturating_sub(killed.elapsed());
        if left.is_zero() {
            let missing: Vec<&str> = theirs
                .iter()
                .zip(&back)
                .filter(|(_, b)| b.is_none())
                .map(|(i, _)| nodes[*i].name.as_str())
                .collect();
            say(o.json, &format!("== not back: {}", missing.join(" ")));
            bail!(
                "failover: {} of {} agents back after {limit:?}",
                back.iter().flatten().count(),
                theirs.len()
            );
        }
        // A new session changes the connected count: looked at again on each change.
        let _ = tokio::time::timeout(left, changes.changed()).await;
    }
    let failover = ms_sorted(back.into_iter().flatten().collect());
    figures.failover_agents = failover.len();
    figures.failover_p50_ms = quantile(&failover, 0.5);
    figures.failover_p99_ms = quantile(&failover, 0.99);
    figures.failover_max_ms = failover.last().copied();
    say(
        o.json,
        &format!(
            "== c1 SIGKILLed: {} agents on other controllers, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            failover.len(),
            figures.failover_p50_ms.unwrap_or(0.0),
            figures.failover_p99_ms.unwrap_or(0.0),
            figures.failover_max_ms.unwrap_or(0.0)
        ),
    );

    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    for c in spawned.iter_mut() {
        c.stop();
    }
    say(o.json, &format!("== figures: {figures:#?}"));
    if o.json {
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}

/// The nodes whose link lease `controller` holds now.
async fn held_by(url: &str, controller: &str) -> anyhow::Result<std::collections::HashSet<String>> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url).await?;
    let rows = sqlx::query("SELECT node_id FROM node_leases WHERE holder = ?")
        .bind(controller)
        .fetch_all(&mut conn)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
        .collect()
}
