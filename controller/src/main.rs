use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use nodewarden_controller::api_actions::{ActionName, ActionRequest, Selector};
use nodewarden_controller::cadir::{self, CaDir, write_file, write_new};
use nodewarden_controller::client;
use nodewarden_controller::config::ControllerConfig;
use nodewarden_controller::state::now_unix;
use nodewarden_shared::ca::{self, Validity};
use nodewarden_shared::name::validate_node_name;
use time::OffsetDateTime;

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
        command: CaCmd,
    },
    /// Run the controller: accept agents on the QUIC link.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Wake, stop, restart or ask the status of nodes' managed services, through the running
    /// controller's API (agent link, else SSH, else Wake-on-LAN for wake).
    Action {
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
    /// Storage devices: who owns each DFS device id, and which other nodes report it.
    Device {
        #[command(subcommand)]
        command: DeviceCmd,
    },
    /// Delete fragments: `fragment_id device_id` pairs, one per line, or a JSON list of pairs,
    /// from FILE or `-` (stdin). Each device's node is found from its reports.
    DeleteFragments {
        #[arg(long, value_name = "FILE|-")]
        pairs: PathBuf,
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
    #[arg(long)]
    node: Option<String>,
    #[arg(long)]
    role: Option<String>,
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
    /// The API token (sent as `Authorization: Bearer`); default `<data-dir>/api.token` if present.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The controller's data directory, where the default token and CA files are.
    #[arg(long, default_value = "/var/lib/nodewarden")]
    data_dir: PathBuf,
    /// Who asks, for the record (actions); default $USER. A named API token overrides it.
    #[arg(long)]
    requested_by: Option<String>,
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create the CA and the controller's server certificate in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// DNS name or IP address agents use for the controller (repeatable; at least one).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        #[arg(long, default_value_t = 3650)]
        ca_days: u32,
        #[arg(long, default_value_t = 825)]
        server_days: u32,
    },
    /// Re-issue the controller's server certificate from the existing CA: to renew it before it
    /// expires, or to change the names agents use. The previous pair is kept as
    /// server.{pem,key}.previous. A running controller serves the new pair to new connections
    /// (agent link and HTTPS) within a second; connected agents stay. Node certificates are
    /// unaffected (same CA).
    Server {
        #[arg(long)]
        dir: PathBuf,
        /// DNS name or IP address agents use for the controller (repeatable; at least one).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Issue a node certificate for a CSR made by `nodewarden-agent enroll --csr`.
    Sign {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        csr: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a node key and certificate in one step (labs and demos: the key leaves this host).
    Issue {
        node: String,
        #[arg(long)]
        dir: PathBuf,
        /// Receives NODE.pem, NODE.key and ca.pem.
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke every certificate issued to NODE; a running controller drops it within a second.
    Revoke {
        node: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// List issued certificates with expiry and revocation.
    List {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        warn_days: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NODEWARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Cmd::Ca { command } => ca_command(command),
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

fn requested_by(api: &ApiArgs) -> String {
    api.requested_by
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "cli".into())
}

/// The API client the arguments describe: the token file and, for `https://`, the CA.
fn api_client(api: &ApiArgs) -> anyhow::Result<client::ApiClient> {
    let token = client::read_token(
        api.token_file.as_deref(),
        &client::default_token_file(&api.data_dir),
    )?;
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

fn ca_command(cmd: CaCmd) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        CaCmd::Init {
            dir,
            sans,
            ca_days,
            server_days,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let d = CaDir::new(&dir);
            for f in [
                cadir::CA_CERT,
                cadir::CA_KEY,
                cadir::SERVER_CERT,
                cadir::SERVER_KEY,
            ] {
                if d.path(f).exists() {
                    bail!(
                        "{}: already exists; refusing to overwrite a CA",
                        d.path(f).display()
                    );
                }
            }
            let material = ca::create_ca("nodewarden CA", Validity::days_from(now, ca_days))?;
            let server =
                ca::issue_server_cert(&material, &sans, Validity::days_from(now, server_days))?;
            write_new(&d.path(cadir::CA_KEY), material.key_pem.as_bytes(), 0o600)?;
            write_new(&d.path(cadir::CA_CERT), material.cert_pem.as_bytes(), 0o644)?;
            write_new(
                &d.path(cadir::SERVER_KEY),
                server.key_pem.unwrap_or_default().as_bytes(),
                0o600,
            )?;
            write_new(
                &d.path(cadir::SERVER_CERT),
                server.cert_pem.as_bytes(),
                0o644,
            )?;
            println!(
                "created CA and server certificate for {} in {}",
                sans.join(", "),
                dir.display()
            );
        }
        CaCmd::Server { dir, sans, days } => {
            let d = CaDir::new(&dir);
            let server = ca::issue_server_cert(&d.ca()?, &sans, Validity::days_from(now, days))
                .with_context(|| format!("issuing a server certificate from {}", dir.display()))?;
            for (name, mode) in [(cadir::SERVER_KEY, 0o600), (cadir::SERVER_CERT, 0o644)] {
                let current = d.path(name);
                if current.exists() {
                    let previous = d.path(&format!("{name}.previous"));
                    std::fs::copy(&current, &previous)
                        .and_then(|_| {
                            std::fs::set_permissions(
                                &previous,
                                std::os::unix::fs::PermissionsExt::from_mode(mode),
                            )
                        })
                        .with_context(|| format!("keeping {}", previous.display()))?;
                }
            }
            // The key first: a controller started between the two writes fails on a key that
            // does not match the certificate, rather than serving a stale one.
            cadir::write_file(
                &d.path(cadir::SERVER_KEY),
                server.key_pem.unwrap_or_default().as_bytes(),
                0o600,
            )?;
            cadir::write_file(
                &d.path(cadir::SERVER_CERT),
                server.cert_pem.as_bytes(),
                0o644,
            )?;
            println!(
                "issued a server certificate for {} valid {days} days in {}; restart the controller to use it",
                sans.join(", "),
                dir.display()
            );
        }
        CaCmd::Sign {
            dir,
            csr,
            node,
            out,
            days,
        } => {
            let d = CaDir::new(&dir);
            let csr_pem = cadir::read(&csr)?;
            let issued =
                ca::sign_node_csr(&d.ca()?, &csr_pem, &node, Validity::days_from(now, days))
                    .with_context(|| format!("signing {}", csr.display()))?;
            write_file(&out, issued.cert_pem.as_bytes(), 0o644)?;
            d.record_issued(&node, &issued.info, now_unix())?;
            println!(
                "issued certificate {} for node {node} (serial {}, {days} days)",
                out.display(),
                issued.info.serial
            );
        }
        CaCmd::Issue {
            node,
            dir,
            out_dir,
            days,
        } => {
            validate_node_name(&node).map_err(anyhow::Error::msg)?;
            let d = CaDir::new(&dir);
            let material = d.ca()?;
            let issued = ca::issue_node_cert(&material, &node, Validity::days_from(now, days))?;
            std::fs::create_dir_all(&out_dir).with_context(|| format!("{}", out_dir.display()))?;
            write_file(
                &out_dir.join(format!("{node}.key")),
                issued.key_pem.clone().unwrap_or_default().as_bytes(),
                0o600,
            )?;
            write_file(
                &out_dir.join(format!("{node}.pem")),
                issued.cert_pem.as_bytes(),
                0o644,
            )?;
            write_file(&out_dir.join("ca.pem"), material.cert_pem.as_bytes(), 0o644)?;
            d.record_issued(&node, &issued.info, now_unix())?;
            println!(
                "issued {node}.pem and {node}.key in {} (serial {})",
                out_dir.display(),
                issued.info.serial
            );
        }
        CaCmd::Revoke { node, dir } => {
            let d = CaDir::new(&dir);
            let serials = d.revoke_node(&node, now_unix())?;
            if serials.is_empty() {
                bail!(
                    "{}: no unrevoked certificate of node {node}",
                    d.path(cadir::ISSUED).display()
                );
            }
            println!("revoked node {node}: serials {}", serials.join(", "));
        }
        CaCmd::List { dir, warn_days } => {
            let d = CaDir::new(&dir);
            let revoked = d.revoked()?.serials();
            let now = now_unix();
            for c in d.issued()?.certs {
                let left = (c.not_after_unix - now) / 86400;
                let state = if revoked.contains(&c.serial) {
                    "revoked".to_string()
                } else if c.not_after_unix <= now {
                    "EXPIRED".to_string()
                } else if left < i64::from(warn_days) {
                    format!("EXPIRES SOON ({left} days)")
                } else {
                    format!("valid ({left} days)")
                };
                println!("{}\t{}\t{state}", c.node, c.serial);
            }
        }
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
