use std::sync::Arc;

use anyhow::Context as _;
use nodewarden_agent::{
    cli, config, enroll, http, link, nodestate, ops, scrape::Scraper, webconfig::WebConfig,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NODEWARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&options.log_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let collectors = cli::build_collectors(&matches, &options.paths)?;
    let names: Vec<&str> = collectors.iter().map(|(n, _)| *n).collect();
    tracing::info!(collectors = ?names, "enabled collectors");
    let web = match &options.web_config {
        Some(file) => WebConfig::load(file)?,
        None => WebConfig {
            tls: None,
            basic_auth: None,
        },
    };
    // The controller link, when the agent config has a [controller] section.
    let link_settings = match &options.config {
        Some(file) => {
            let config = config::AgentConfig::load(file)?;
            match config.controller.clone() {
                Some(c) => {
                    let state = nodestate::StateSource::new(
                        &config,
                        &options.paths.procfs,
                        &options.paths.rootfs,
                    );
                    // One executor for the agent's lifetime: its per-service locks serialise
                    // operations on a service across commands.
                    let executor =
                        (!config.ops.is_empty()).then(|| ops::Executor::new(&config.ops));
                    Some(link::LinkSettings::new(
                        c,
                        state,
                        executor,
                        &options.paths.sysfs,
                    )?)
                }
                None => None,
            }
        }
        None => None,
    };
    let mut scraper = Scraper::new(options.paths.clone(), collectors);
    if let Some(s) = &link_settings {
        scraper.register_collector(Box::new(s.state.status.clone()));
    }
    let scraper = Arc::new(scraper);
    let server = Arc::new(http::MetricsServer {
        scraper,
        telemetry_path: options.telemetry_path.clone(),
        web,
        in_flight: (options.max_requests > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(options.max_requests as usize))),
    });

    // One thread for the network; scrapes run on the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = http::bind(&options.listen_address)
            .await
            .with_context(|| format!("--web.listen-address {}", options.listen_address))?;
        tracing::info!(address = %listener.local_addr()?, tls = server.web.tls.is_some(), "listening");
        if let Some(s) = &link_settings {
            s.state
                .metrics_port
                .store(listener.local_addr()?.port(), std::sync::atomic::Ordering::Relaxed);
        }
        // The controller link runs beside the metrics server and is closed on the way out.
        let (stop_link, stop_rx) = tokio::sync::watch::channel(false);
        let link_task = link_settings.map(|s| tokio::spawn(link::run(s, stop_rx)));
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let result = tokio::select! {
            r = server.serve(listener) => r,
            _ = tokio::signal::ctrl_c() => { tracing::info!("shutting down"); Ok(()) }
            _ = terminate.recv() => { tracing::info!("shutting down"); Ok(()) }
        };
        let _ = stop_link.send(true);
        if let Some(task) = link_task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
        }
        result
    })
}

/// `op` / `ssh-dispatch`: one declared operation, its result as one JSON line on stdout, the exit
/// status saying ok (0), failed (1) or refused (3).
fn run_operation(config: &std::path::Path, request: cli::OpsRequest) -> i32 {
    use nodewarden_agent::ops::dispatch;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NODEWARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
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
