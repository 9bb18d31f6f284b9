//! How many state reports per second the store persists, and what a flush costs.
//!
//! Simulates a fleet of `--nodes` agents, each reporting (heartbeat + one storage device) every
//! `--report-interval`, into a fresh database `nw_bench_<random>` on the MariaDB server at
//! `--server-url` (dropped afterwards), or into SQLite in a temporary directory without it.
//! `--saturate` reports as fast as the producer can instead, to find the ceiling.
//!
//! cargo run --release -p nodewarden-controller --example store_bench -- \
//!     --server-url mysql://user:password@127.0.0.1:3306 --nodes 10000 --report-interval 5s

use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use nodewarden_controller::store::{DeviceReport, NodeInfo, Store, StoreConfig, redact};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

#[derive(Parser, Debug)]
struct Args {
    /// MariaDB/MySQL server (no database in the path); without it, SQLite in a temp dir.
    #[arg(long)]
    server_url: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Every node reports once per interval.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    report_interval: Duration,
    /// Measured time (after all nodes connected).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,
    #[arg(long, default_value_t = 1000)]
    rows_per_statement: usize,
    /// Report as fast as possible (and flush continuously) to find the ceiling.
    #[arg(long)]
    saturate: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number.parse().map_err(|e| format!("{text:?}: {e}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn node_id(i: usize) -> String {
    format!("node-{i:05}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data_dir = tempfile::tempdir()?;
    let mut config = StoreConfig::new(data_dir.path());
    config.flush_interval = if args.saturate {
        Duration::from_millis(1)
    } else {
        args.flush_interval
    };
    config.rows_per_statement = args.rows_per_statement;

    let database = format!(
        "nw_bench_{:08x}",
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u32
    );
    let server = match &args.server_url {
        Some(url) => {
            let options = MySqlConnectOptions::from_str(url)
                .with_context(|| format!("server URL {}", redact(url)))?;
            let pool = MySqlPoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .with_context(|| format!("connecting to {}", redact(url)))?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
                .execute(&pool)
                .await?;
            config.url = Some(format!("{}/{database}", url.trim_end_matches('/')));
            Some(pool)
        }
        None => None,
    };

    let result = run(&args, config).await;
    if let Some(pool) = server {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
            .execute(&pool)
            .await?;
    }
    result
}

async fn run(args: &Args, config: StoreConfig) -> anyhow::Result<()> {
    let store = Store::open(config.clone()).await?;
    println!("database: {}", store.database());
    let started = SystemTime::now();
    for i in 0..args.nodes {
        store.node_connected(
            NodeInfo {
                node_id: node_id(i),
                hostname: format!("{}.cluster", node_id(i)),
                addresses: vec![format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)],
                mac_addresses: vec![format!(
                    "52:54:00:00:{:02x}:{:02x}",
                    (i >> 8) & 255,
                    i & 255
                )],
                roles: vec!["storage".into()],
                agent_version: "0.1.0".into(),
                cert_fingerprint: format!("sha256:{i:064x}"),
                services: vec!["dfs-client".into()],
                interfaces: vec![],
                scrape: String::new(),
            },
            started,
        )?;
    }
    store.flush().await?;
    println!("{} nodes connected", args.nodes);

    let mut flushes = store.flush_reports();
    let collector = tokio::spawn(async move {
        let mut reports = Vec::new();
        loop {
            match flushes.recv().await {
                Ok(report) => reports.push(report),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    eprintln!("missed {missed} flush reports");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        reports
    });

    let report = |i: usize, step: u64| -> anyhow::Result<()> {
        let now = SystemTime::now();
        store.node_seen(&node_id(i), now)?;
        store.device_report(DeviceReport {
            device_id: i as i64,
            node_id: node_id(i),
            fragment_folder: "/srv/dfs/fragments".into(),
            total_bytes: 4_000_000_000_000,
            free_bytes: 2_000_000_000_000 - step,
            fragment_count: step,
            reported_at: now,
        })?;
        Ok(())
    };

    let begin = Instant::now();
    let mut sent: u64 = 0;
    if args.saturate {
        while begin.elapsed() < args.duration {
            for _ in 0..1000 {
                report((sent % args.nodes as u64) as usize, sent)?;
                sent += 1;
            }
            tokio::task::yield_now().await;
        }
    } else {
        let per_second = args.nodes as f64 / args.report_interval.as_secs_f64();
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        while begin.elapsed() < args.duration {
            ticker.tick().await;
            let due = (begin.elapsed().as_secs_f64() * per_second) as u64;
            while sent < due {
                report((sent % args.nodes as u64) as usize, sent)?;
                sent += 1;
            }
        }
    }
    let offered = begin.elapsed();
    store.flush().await?;
    let drained = begin.elapsed();
    let metrics_flushes = store.metrics().flushes.get();
    store.close().await?;
    let mut reports = collector.await?;
    // The drain flush belongs to the run; the connect flush came before the subscription.
    reports.retain(|r| r.rows > 0);

    let node_rows: usize = reports.iter().map(|r| r.rows).sum::<usize>() / 2;
    let mut latencies: Vec<Duration> = reports.iter().map(|r| r.duration).collect();
    latencies.sort();
    let mut statements: Vec<usize> = reports.iter().map(|r| r.statements).collect();
    statements.sort();
    let rows_per_flush = reports.iter().map(|r| r.rows).max().unwrap_or(0);
    println!(
        "mode: {}",
        if args.saturate {
            "saturate (report as fast as possible, flush continuously)".to_string()
        } else {
            format!(
                "{} nodes every {:?} = {:.0} reports/s offered, flush every {:?}",
                args.nodes,
                args.report_interval,
                args.nodes as f64 / args.report_interval.as_secs_f64(),
                config.flush_interval
            )
        }
    );
    println!(
        "reports sent: {sent} in {:.1} s = {:.0}/s",
        offered.as_secs_f64(),
        sent as f64 / offered.as_secs_f64()
    );
    println!(
        "node state rows persisted: {node_rows} in {:.1} s = {:.0}/s (each a node's latest report; \
         coalesced reports are not rows)",
        drained.as_secs_f64(),
        node_rows as f64 / drained.as_secs_f64()
    );
    println!(
        "flushes: {} (store counter {metrics_flushes}), rows per flush max {rows_per_flush}",
        reports.len()
    );
    println!(
        "statements per flush: median {} min {} max {} (rows_per_statement {}; plus BEGIN/COMMIT)",
        statements.get(statements.len() / 2).unwrap_or(&0),
        statements.first().unwrap_or(&0),
        statements.last().unwrap_or(&0),
        config.rows_per_statement
    );
    println!(
        "flush latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}
