//! `nodewarden-controller`'s command line: `ca …`, `serve --config`, and the CLI verbs that call
//! the running controller's API (`action`, `delete-fragments`, `nodes`, `events`, `device …`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use nodewarden_controller::api_actions::{ActionName, ActionRequest, Selector};
use nodewarden_controller::config::ControllerConfig;
use nodewarden_controller::{ca_cli, client};
use nodewarden_shared::name::validate_node_name;

#[derive(Parser)]
#[command(
    name = "nodewarden-controller",
    version,
    about = "nodewarden controller: CA, agent link, fleet store and audit log, API, web console and CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage the controller's certificate authority.
    Ca {
        #[command(subcommand)]
        command: ca_cli::CaCmd,
    },
    /// Run the controller: accept agents on the QUIC link.
    Serve {
        /// The controller's TOML settings (e.g. /etc/nodewarden/controller.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Wake, stop, restart or ask the status of nodes' managed services, through the running
    /// controller's API (agent link, else SSH, else Wake-on-LAN for wake).
    Action {
        /// wake (power on if needed, start the services), stop, restart or status.
        action: ActionArg,
        #[command(flatten)]
        target: TargetArgs,
        /// Only this service instead of every managed one.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The fleet as the running controller sees it: each node online or offline and since when,
    /// its address, roles, services and storage.
    Nodes {
        /// The API's JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The audit log, newest first: nodes going online and offline, and every remote operation
    /// with who asked, the path taken and the result.
    Events {
        /// Only this node's entries.
        #[arg(long)]
        node: Option<String>,
        /// How many entries (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// The API's JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Fragment integrity: each storage device's fragments reconciled with the DFS's FRAGMENT
    /// table (missing, orphaned, corrupt, without digest), and the orphans' clean-up.
    Fragments {
        #[command(subcommand)]
        command: FragmentsCmd,
    },
    /// Drain this controller (its agents link to another controller of their list, and new
    /// links are turned away), end a drain with --resume, or only show the state with --status.
    Drain {
        /// End the drain: agents may link to this controller again.
        #[arg(long, conflicts_with = "status")]
        resume: bool,
        /// Only show whether the controller is draining.
        #[arg(long)]
        status: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Storage devices: who owns each DFS device id, and which other nodes report it.
    Device {
        #[command(subcommand)]
        command: DeviceCmd,
    },
    /// Delete fragments: `fragment_id device_id` pairs, one per line, or a JSON list of pairs,
    /// from FILE or `-` (stdin). Each device's node is found from its reports.
    DeleteFragments {
        /// The pairs: a file, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        pairs: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum FragmentsCmd {
    /// Counts, bytes and sample ids per state: of one device audited now, or every device's
    /// last audit.
    Audit {
        /// The DFS device id (DEVICE.ID); every device's last audit without it.
        #[arg(long)]
        device: Option<u32>,
        /// The API's JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a device's orphaned fragments: a dry run first (count, bytes, sample); then, with
    /// --yes or when confirmed at the terminal, the deletion, audited, each id re-checked
    /// against FRAGMENT at deletion time.
    CleanOrphans {
        /// The DFS device id (DEVICE.ID).
        #[arg(long)]
        device: u32,
        /// Delete without asking once the dry run is shown.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Every device with its owner, folder, free space and conflicting claims.
    List {
        /// The API's JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Move a device to another node (a disk moved between hosts, or a conflict settled);
    /// recorded in the audit log.
    Assign {
        /// The DFS device id (DEVICE.ID).
        #[arg(long)]
        device: u32,
        /// The node that holds it now.
        #[arg(long)]
        node: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ActionArg {
    Wake,
    Stop,
    Restart,
    Status,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// One node, by name (as in its certificate).
    #[arg(long)]
    node: Option<String>,
    /// Every node reporting this role: storage, ray or other.
    #[arg(long)]
    role: Option<String>,
    /// Every known node (connected now or before, or declared in [nodes.X]).
    #[arg(long)]
    all: bool,
}

#[derive(clap::Args)]
struct ApiArgs {
    /// The controller's API (its `[http] listen`; `https://` when `[http] tls` is set).
    #[arg(long, default_value = "http://127.0.0.1:9180", env = "NODEWARDEN_API")]
    api: String,
    /// The CA an `https://` API's certificate must chain to; default `<data-dir>/ca/ca.pem` (the
    /// controller's own CA) if present, else the public roots.
    #[arg(long, env = "NODEWARDEN_API_CA")]
    ca_file: Option<PathBuf>,
    /// The API token file (its first token is sent as `Authorization: Bearer`); default
    /// `<data-dir>/api.token` if present.
    #[arg(long, env = "NODEWARDEN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The controller's data directory, where the default token and CA files are.
    #[arg(
        long,
        default_value = "/var/lib/nodewarden",
        env = "NODEWARDEN_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// Who asks, for the record (actions); default $USER, else $LOGNAME, else this account's
    /// name. A named API token overrides it.
    #[arg(long)]
    requested_by: Option<String>,
    /// Send the token over plain `http://` to a host other than this one (loopback). Anyone on
    /// the path can read it: prefer `https://` (the controller's `[http] tls = true`).
    #[arg(long)]
    insecure_http: bool,
    /// Where `token_file` and `data_dir` came from (flag, variable or default), for messages.
    #[arg(skip)]
    given: Given,
}

/// Where two of [`ApiArgs`]'s settings came from.
#[derive(Clone, Copy, Default)]
struct Given {
    token_file: client::Given,
    data_dir: client::Given,
}

impl Given {
    /// From the innermost subcommand's matches (the one that holds the API arguments).
    fn from_matches(matches: &clap::ArgMatches) -> Given {
        let mut m = matches;
        while let Some((_, sub)) = m.subcommand() {
            m = sub;
        }
        let given = |id: &str| {
            if !m.try_contains_id(id).unwrap_or(false) {
                return client::Given::Default;
            }
            match m.value_source(id) {
                Some(clap::parser::ValueSource::CommandLine) => client::Given::Flag,
                Some(clap::parser::ValueSource::EnvVariable) => client::Given::Env,
                _ => client::Given::Default,
            }
        };
        Given {
            token_file: given("token_file"),
            data_dir: given("data_dir"),
        }
    }
}

impl Cmd {
    /// The API arguments of a CLI verb (none for `ca` and `serve`).
    fn api_args_mut(&mut self) -> Option<&mut ApiArgs> {
        match self {
            Cmd::Ca { .. } | Cmd::Serve { .. } => None,
            Cmd::Action { api, .. }
            | Cmd::Nodes { api, .. }
            | Cmd::Events { api, .. }
            | Cmd::Drain { api, .. }
            | Cmd::DeleteFragments { api, .. }
            | Cmd::Device {
                command: DeviceCmd::List { api, .. } | DeviceCmd::Assign { api, .. },
            }
            | Cmd::Fragments {
                command: FragmentsCmd::Audit { api, .. } | FragmentsCmd::CleanOrphans { api, .. },
            } => Some(api),
        }
    }
}

/// mimalloc: QUIC allocates and frees small buffers per datagram; with 10,000 agents glibc's
/// malloc was a tenth of the controller's steady cost (docs/perf.md, fleet simulator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(api) = cli.command.api_args_mut() {
        api.given = Given::from_matches(&matches);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NODEWARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Cmd::Ca { command } => ca_cli::run(command),
        Cmd::Serve { config } => serve(&config),
        Cmd::Action {
            action,
            target,
            service,
            api,
        } => {
            let selector = match (target.node, target.role) {
                (Some(node), _) => Selector::Node(node),
                (None, Some(role)) => Selector::Role(
                    serde_json::from_value(serde_json::Value::String(role.clone())).map_err(
                        |_| anyhow::anyhow!("--role {role:?}: expected storage, ray or other"),
                    )?,
                ),
                (None, None) => Selector::All(target.all),
            };
            let action = match action {
                ActionArg::Wake => ActionName::Wake,
                ActionArg::Stop => ActionName::Stop,
                ActionArg::Restart => ActionName::Restart,
                ActionArg::Status => ActionName::Status,
            };
            call_api(
                &api,
                ActionRequest {
                    selector: Some(selector),
                    action,
                    service,
                    pairs: None,
                    requested_by: requested_by(&api),
                },
            )
        }
        Cmd::Nodes { json, api } => print_view(&api, "/api/v1/nodes", json, client::render_nodes),
        Cmd::Events {
            node,
            limit,
            json,
            api,
        } => {
            let mut path = format!("/api/v1/events?limit={limit}");
            if let Some(node) = node {
                validate_node_name(&node).map_err(|e| anyhow::anyhow!("--node {node:?}: {e}"))?;
                path.push_str(&format!("&node={node}"));
            }
            print_view(&api, &path, json, client::render_events)
        }
        Cmd::Fragments {
            command: FragmentsCmd::Audit { device, json, api },
        } => {
            let client = api_client(&api)?;
            let audits: Vec<serde_json::Value> = match device {
                Some(d) => vec![client.get_json(&format!("/api/v1/fragments/audit?device={d}"))?],
                None => client.get_json("/api/v1/fragments/audit")?,
            };
            if json {
                let answer = match device {
                    Some(_) => audits.into_iter().next().unwrap_or_default(),
                    None => serde_json::Value::Array(audits),
                };
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let views = audits
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<Vec<client::FragmentAuditView>, _>>()
                    .context("the API's fragment audit")?;
                print!("{}", client::render_fragment_audits(&views));
            }
            Ok(())
        }
        Cmd::Fragments {
            command: FragmentsCmd::CleanOrphans { device, yes, api },
        } => {
            let client = api_client(&api)?;
            let who = requested_by(&api);
            let plan: client::OrphanPlanView = client.post_json(
                "/api/v1/fragments/clean-orphans",
                &nodewarden_controller::wire::CleanOrphansRequest {
                    device,
                    plan_id: None,
                    requested_by: who.clone(),
                },
            )?;
            print!("dry run: {}", client::render_orphan_plan(&plan));
            if plan.count == 0 {
                return Ok(());
            }
            if !yes && !confirm(&format!("delete these {} fragment(s)?", plan.count))? {
                println!("nothing deleted (confirm with --yes)");
                return Ok(());
            }
            let result: client::CleanOrphansResult = client.post_json(
                "/api/v1/fragments/clean-orphans",
                &nodewarden_controller::wire::CleanOrphansRequest {
                    device,
                    plan_id: Some(plan.plan_id),
                    requested_by: who,
                },
            )?;
            print!("{}", client::render_clean_result(&result));
            if !result.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Drain {
            resume,
            status,
            api,
        } => {
            use nodewarden_controller::wire::DrainState;
            const PATH: &str = "/api/v1/controller/drain";
            let client = api_client(&api)?;
            let state: DrainState = if status {
                client.get_json(PATH)?
            } else if resume {
                client.delete_json(PATH)?
            } else {
                client.post_json(PATH, &serde_json::json!({}))?
            };
            match (state.draining, state.links_closed) {
                (true, Some(n)) => println!(
                    "draining: {n} links closed; agents link to the other controllers of their list"
                ),
                (true, None) => println!("draining"),
                (false, _) => println!("not draining: agents may link to this controller"),
            }
            Ok(())
        }
        Cmd::Device {
            command: DeviceCmd::List { json, api },
        } => print_view(&api, "/api/v1/devices", json, client::render_devices),
        Cmd::Device {
            command: DeviceCmd::Assign { device, node, api },
        } => {
            validate_node_name(&node).map_err(|e| anyhow::anyhow!("--node {node:?}: {e}"))?;
            let client = api_client(&api)?;
            let answer: Option<client::DeviceView> = client.post_json(
                &format!("/api/v1/devices/{device}/owner"),
                &nodewarden_controller::wire::AssignDevice {
                    node,
                    requested_by: requested_by(&api),
                },
            )?;
            print!(
                "{}",
                client::render_devices(&answer.into_iter().collect::<Vec<_>>())
            );
            Ok(())
        }
        Cmd::DeleteFragments { pairs, api } => {
            let (text, name) = if pairs.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("reading pairs from stdin")?;
                (text, "stdin".to_string())
            } else {
                (
                    std::fs::read_to_string(&pairs).with_context(|| pairs.display().to_string())?,
                    pairs.display().to_string(),
                )
            };
            let pairs = client::parse_pairs(&text, &name)?;
            call_api(
                &api,
                ActionRequest {
                    selector: None,
                    action: ActionName::DeleteFragments,
                    service: None,
                    pairs: Some(pairs),
                    requested_by: requested_by(&api),
                },
            )
        }
    }
}

/// Asks at the terminal; no terminal means no.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Ok(false);
    }
    print!("{question} [y/N] ");
    std::io::Write::flush(&mut std::io::stdout())?;
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn requested_by(api: &ApiArgs) -> String {
    api.requested_by
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(client::account_name)
}

/// The API client the arguments describe: the token file and, for `https://`, the CA.
fn api_client(api: &ApiArgs) -> anyhow::Result<client::ApiClient> {
    client::check_api_scheme(&api.api, api.insecure_http)?;
    let default_token = client::default_token_file(&api.data_dir);
    let token = client::read_token(api.token_file.as_deref(), &default_token)?;
    let token_source = client::token_source(
        api.token_file.as_deref().map(|f| (f, api.given.token_file)),
        (&api.data_dir, api.given.data_dir),
        token.is_some(),
    );
    let ca_pem = if api.api.starts_with("https://") {
        client::read_ca(
            api.ca_file.as_deref(),
            &client::default_ca_file(&api.data_dir),
        )?
    } else {
        None
    };
    Ok(client::ApiClient {
        api: api.api.clone(),
        token,
        token_source,
        ca_pem,
    })
}

/// GETs a list from the API and prints it as the API's JSON or as `render`'s table.
fn print_view<T: serde::de::DeserializeOwned>(
    api: &ApiArgs,
    path: &str,
    json: bool,
    render: fn(&[T]) -> String,
) -> anyhow::Result<()> {
    let client = api_client(api)?;
    if json {
        let answer: serde_json::Value = client.get_json(path)?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        let items: Vec<T> = client.get_json(path)?;
        print!("{}", render(&items));
    }
    Ok(())
}

/// Calls the API; exits 1 when a node failed, fails (status 1 via anyhow) on a refused request.
fn call_api(api: &ApiArgs, request: ActionRequest) -> anyhow::Result<()> {
    let client = api_client(api)?;
    let code = client::run_cli(&client, &request)?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

fn serve(config_file: &Path) -> anyhow::Result<()> {
    let config = ControllerConfig::load(config_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        nodewarden_controller::server::serve(config, shutdown).await
    })
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory as _;

    /// Every subcommand, flag and argument says what it is for in `--help`.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the subcommand)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "nodewarden-controller", &mut missing);
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }
}
