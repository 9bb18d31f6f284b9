use std::sync::Arc;

use anyhow::Context as _;
use nodewarden_agent::{
    cli, config, enroll, fragment_task, http, link, nodestate, ops, scrape::Scraper,
    webconfig::WebConfig,
};

fn main() -> anyhow::Result<()> {
    // One malloc arena: the agent allocates little and rarely, and every extra thread (the
    // runtime, the scrape pool, the filesystem stat worker) would otherwise keep its own arena
    // resident. Measured in docs/perf.md.
    // SAFETY: mallopt only tunes glibc's allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let matches = cli::command().get_matches();
    if let Some(("enroll", m)) = matches.subcommand() {
        return enroll::run(m);
    }
    if let Some((config, request)) = cli::ops_request(&matches) {
        std::process::exit(run_operation(&config, request));
    }
    let options = cli::metrics_options(&matches);
    init_logging(
        &options.log_level,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );

    let collectors = cli::build_collectors(&matches, &options.paths)?;
    let names: Vec<&str> = collectors.iter().map(|(n, _)| *n).collect();
    tracing::info!(collectors = ?names, "enabled collectors");
    if options.log_format == "json" {
        tracing::warn!("--log.format=json is not supported by this agent; logging as text");
    }
    // Everything needed from the command line has been taken; its memory goes back with the
    // start-up heap after the first scrape.
    drop(matches);
    let web = match &options.web_config {
        Some(file) => WebConfig::load(file)?,
        None => WebConfig {
            tls: None,
            basic_auth: None,
        },
    };
    // The controller link, when the agent config has a [controller] section.
    let agent_config = match &options.config {
        Some(file) => Some(config::AgentConfig::load(file)?),
        None => None,
    };
    // The fragment task (`[fragments]`): its own thread at idle I/O priority; the link sends
    // what it publishes. Not stopped at exit: it holds nothing that needs closing.
    let inventories = Arc::new(fragment_task::Inventories::default());
    if let Some(config) = agent_config.as_ref().filter(|c| !c.fragments.is_empty()) {
        let devices: Vec<u32> = config.fragments.iter().map(|f| f.device_id).collect();
        fragment_task::FragmentTask::spawn(
            config.fragments.clone(),
            &options.paths.procfs,
            &options.paths.sysfs,
            inventories.clone(),
        )
        .context("starting the fragment task thread")?;
        // Changes between scans, applied to the inventories as deltas.
        if let Err(e) =
            nodewarden_agent::fragment_watch::spawn(&config.fragments, inventories.clone())
        {
            tracing::warn!(error = %e, "fragment folders not watched: changes show at the next scan");
        }
        tracing::info!(?devices, "fragment inventory and scrub task started");
    }
    let link_settings = match &agent_config {
        Some(config) => {
            match config.controller.clone() {
                Some(c) => {
                    let state = nodestate::StateSource::new(
                        config,
                        &options.paths.procfs,
                        &options.paths.rootfs,
                    );
                    // One executor for the agent's lifetime: its per-service locks serialise
                    // operations on a service across commands.
                    let executor =
                        (!config.ops.is_empty()).then(|| ops::Executor::new(&config.ops));
                    let mut settings =
                        link::LinkSettings::new(c, state, executor, &options.paths.sysfs)?;
                    settings.node.metrics_tls = web.tls.is_some();
                    if !config.fragments.is_empty() {
                        settings.node.fragments = Some(inventories.clone());
                    }
                    settings.node.ray = config.ray.clone().map(|ray| {
                        Arc::new(nodewarden_agent::ray::RaySource::new(
                            ray,
                            &options.paths.procfs,
                        ))
                    });
                    Some(settings)
                }
                None => None,
            }
        }
        None => None,
    };
    let mut scraper = Scraper::new(options.paths.clone(), collectors);
    // node_exporter serves the exporter's own process_* families unless told not to.
    if !options.disable_exporter_metrics {
        scraper.register_collector(Box::new(nodewarden_agent::process::ProcessMetrics::new()));
    }
    if let Some(s) = &link_settings {
        scraper.register_collector(Box::new(s.node.state.status.clone()));
    }
    if agent_config
        .as_ref()
        .is_some_and(|c| !c.fragments.is_empty())
    {
        scraper.register_collector(Box::new(fragment_task::FragmentMetrics(
            inventories.clone(),
        )));
    }
    let scraper = Arc::new(scraper);
    let server = Arc::new(http::MetricsServer::new(
        scraper,
        options.telemetry_path.clone(),
        web,
        http::Limits::new(options.max_requests),
    ));

    // The metrics runtime: one thread for the server; a scrape runs on the blocking pool, one at
    // a time, so that a scrape stuck on a source leaves the server answering (limits, 503s,
    // timeouts); the hand-off costs about 0.04 ms a scrape (docs/perf.md). The pool's threads:
    // that scrape and the bcrypt checks (webconfig.rs). A hung network filesystem cannot hold a
    // scrape: those are stated on the filesystem collector's own worker with a timeout.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1 + nodewarden_agent::webconfig::BCRYPT_WORKERS)
        // Kept between scrapes at common intervals rather than a thread started per scrape.
        .thread_keep_alive(std::time::Duration::from_secs(300))
        .thread_name("metrics")
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(async move {
        let listeners = if options.systemd_socket {
            systemd_listeners().context("--web.systemd-socket")?
        } else {
            let mut listeners = Vec::with_capacity(options.listen_addresses.len());
            for address in &options.listen_addresses {
                listeners.push(
                    http::bind(address)
                        .await
                        .with_context(|| format!("--web.listen-address {address}"))?,
                );
            }
            listeners
        };
        for listener in &listeners {
            tracing::info!(address = %listener.local_addr()?, tls = server.web.tls.is_some(), "listening");
        }
        let Some(first) = listeners.first() else {
            anyhow::bail!("no address to listen on");
        };
        let metrics_port = first.local_addr()?.port();
        // The controller link (when configured) starts once the metrics port is known (its
        // reports carry it), on a thread and runtime of its own, so that a scrape never delays
        // its heartbeats.
        let (stop_link, stop_rx) = tokio::sync::watch::channel(false);
        let link_done = match link_settings {
            Some(s) => {
                s.node.state
                    .metrics_port
                    .store(metrics_port, std::sync::atomic::Ordering::Relaxed);
                Some(spawn_link(s, stop_rx)?)
            }
            None => None,
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // One server task per listener (node_exporter serves every --web.listen-address); the
        // first to end (an error) ends the agent.
        let mut serving = tokio::task::JoinSet::new();
        for listener in listeners {
            serving.spawn(server.clone().serve(listener));
        }
        let result = tokio::select! {
            r = serving.join_next() => match r {
                Some(Ok(r)) => r,
                Some(Err(e)) => Err(anyhow::Error::new(e).context("metrics server task")),
                None => Ok(()),
            },
            _ = tokio::signal::ctrl_c() => { tracing::info!("shutting down"); Ok(()) }
            _ = terminate.recv() => { tracing::info!("shutting down"); Ok(()) }
        };
        // The link says goodbye to the controller; give it a second.
        let _ = stop_link.send(true);
        if let Some(done) = link_done {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), done).await;
        }
        result
    });
    // A scrape stuck on a source (a FIFO in the textfile directory) must not hold the exit: a
    // dropped runtime would wait for its blocking thread for good.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// The listening sockets systemd passed by socket activation (`LISTEN_PID`, `LISTEN_FDS`,
/// descriptors from 3 on), as exporter-toolkit's `--web.systemd-socket` takes them.
fn systemd_listeners() -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    use std::os::fd::FromRawFd as _;
    const FIRST_FD: i32 = 3;
    let pid: u32 = std::env::var("LISTEN_PID")
        .context("LISTEN_PID is not set")?
        .parse()
        .context("LISTEN_PID")?;
    anyhow::ensure!(
        pid == std::process::id(),
        "LISTEN_PID {pid} is not this process"
    );
    let count: i32 = std::env::var("LISTEN_FDS")
        .context("LISTEN_FDS is not set")?
        .parse()
        .context("LISTEN_FDS")?;
    anyhow::ensure!(count > 0, "systemd passed no sockets");
    (FIRST_FD..FIRST_FD.saturating_add(count))
        .map(|fd| {
            // SAFETY: systemd hands these descriptors to this process (LISTEN_PID checked) and
            // nothing else in the agent owns them; each is taken exactly once.
            let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            listener
                .set_nonblocking(true)
                .with_context(|| format!("systemd socket fd {fd}"))?;
            tokio::net::TcpListener::from_std(listener)
                .with_context(|| format!("systemd socket fd {fd}"))
        })
        .collect()
}

/// Runs the controller link on its own thread and current-thread runtime; the receiver
/// resolves when the link has stopped.
fn spawn_link(
    settings: link::LinkSettings,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("link".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(2)
                .build()
            {
                Ok(runtime) => runtime.block_on(link::run(settings, stop)),
                Err(e) => tracing::error!(error = %e, "starting the link runtime"),
            }
            let _ = done_tx.send(());
        })
        .context("starting the link thread")?;
    Ok(done)
}

/// `op` / `ssh-dispatch`: one declared operation, its result as one JSON line on stdout, the exit
/// status saying ok (0), failed (1) or refused (3).
fn run_operation(config: &std::path::Path, request: cli::OpsRequest) -> i32 {
    use nodewarden_agent::ops::dispatch;
    init_logging("warn", false);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return dispatch::EXIT_FAILED;
        }
    };
    let result = runtime.block_on(async {
        match request {
            cli::OpsRequest::Words(words) => dispatch::run_words(config, &words).await,
            cli::OpsRequest::SshDispatch => {
                let line = std::env::var("SSH_ORIGINAL_COMMAND").ok();
                dispatch::run_ssh_line(config, line.as_deref()).await
            }
        }
    });
    println!("{}", result.to_json_line());
    dispatch::exit_code(&result)
}

/// Logs to stderr at `default_level`, or as `NODEWARDEN_LOG` says (`warn,nodewarden_agent=debug`:
/// a default level and per-target levels). `filter::Targets` rather than `EnvFilter`, which would
/// link a second regex engine into the agent for span-field filters nobody uses here.
fn init_logging(default_level: &str, ansi: bool) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = match std::env::var("NODEWARDEN_LOG") {
        Ok(spec) => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!(
                "NODEWARDEN_LOG={spec:?} is not a log filter ({e}); logging at {default_level}"
            );
            default_targets(default_level)
        }),
        Err(_) => default_targets(default_level),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi),
        )
        .with(filter)
        .init();
}

fn default_targets(level: &str) -> tracing_subscriber::filter::Targets {
    // `--log.level` takes only the four level names (cli.rs), which always parse.
    level.parse().unwrap_or_else(|_| {
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
    })
}
