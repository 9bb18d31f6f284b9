//! The CA directory and the CLI's credentials with real processes of the controller binary:
//! concurrent `ca sign` and `ca revoke` losing nothing, private key modes whatever was there
//! before, revocation by serial, a token file in the server's format used by the CLI against a
//! real controller, and plain `http://` refused off loopback. Needs `cargo build --workspace`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nodewarden_controller::cadir::CaDir;

use nodewarden_tests::lab::{Lab, run_ok};
use nodewarden_tests::{bin_path, wait_for};

fn controller() -> Command {
    Command::new(bin_path("nodewarden-controller"))
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn init(ca: &Path) {
    run_ok(
        controller()
            .args(["ca", "init", "--dir"])
            .arg(ca)
            .args(["--san", "127.0.0.1"]),
    );
}

#[test]
fn fifty_concurrent_signs_and_revokes_lose_nothing() {
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let (ca, certs) = (dir.path().join("ca"), dir.path().join("certs"));
    init(&ca);
    // The nodes to revoke, issued concurrently too.
    let issuing: Vec<Child> = (0..N)
        .map(|i| {
            spawn(
                controller()
                    .args(["ca", "issue", &format!("old-{i}"), "--dir"])
                    .arg(&ca)
                    .arg("--out-dir")
                    .arg(&certs),
            )
        })
        .collect();
    for child in issuing {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    for i in 0..N {
        let (_, csr) = nodewarden_shared::ca::create_csr(&format!("new-{i}")).unwrap();
        std::fs::write(dir.path().join(format!("new-{i}.csr")), csr).unwrap();
    }

    // Every sign of a new node races a revocation of an old one.
    let mut running = Vec::new();
    for i in 0..N {
        running.push(spawn(
            controller()
                .args(["ca", "sign", "--dir"])
                .arg(&ca)
                .arg("--csr")
                .arg(dir.path().join(format!("new-{i}.csr")))
                .args(["--node", &format!("new-{i}"), "--out"])
                .arg(certs.join(format!("new-{i}.pem"))),
        ));
        running.push(spawn(
            controller()
                .args(["ca", "revoke", &format!("old-{i}"), "--dir"])
                .arg(&ca),
        ));
    }
    for child in running {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }

    let d = CaDir::new(&ca);
    let issued = d.issued().unwrap().certs;
    assert_eq!(issued.len(), 2 * N, "{issued:?}");
    let revoked = d.revoked().unwrap();
    assert_eq!(revoked.entries.len(), N, "{revoked:?}");
    let revoked = revoked.serials();
    for i in 0..N {
        let old: Vec<_> = issued
            .iter()
            .filter(|c| c.node == format!("old-{i}"))
            .collect();
        assert_eq!(old.len(), 1, "old-{i}");
        assert!(revoked.contains(&old[0].serial), "old-{i} not revoked");
        // The certificate written is the one recorded, and it is not revoked.
        let pem = std::fs::read_to_string(certs.join(format!("new-{i}.pem"))).unwrap();
        let serial = nodewarden_shared::ca::inspect_pem(&pem).unwrap().serial;
        assert!(
            issued
                .iter()
                .any(|c| c.node == format!("new-{i}") && c.serial == serial),
            "new-{i} ({serial}) not in issued.toml"
        );
        assert!(!revoked.contains(&serial), "new-{i} revoked");
    }
    // No temporary file left anywhere, and the lists keep their modes.
    let expected: BTreeSet<String> = [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "issued.toml",
        "revoked.toml",
        "ca.lock",
    ]
    .map(String::from)
    .into();
    assert_eq!(names(&ca), expected);
    assert!(
        names(&certs)
            .iter()
            .all(|n| !n.starts_with('.') && !n.ends_with(".tmp")),
        "{:?}",
        names(&certs)
    );
    assert_eq!(mode(&ca.join("issued.toml")), 0o644);
    assert_eq!(mode(&ca.join("revoked.toml")), 0o644);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert_eq!(mode(&ca.join("ca.lock")), 0o600);
}

#[test]
fn keys_are_private_whatever_was_there_before() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    std::fs::create_dir(&ca).unwrap();
    // The temporary name older versions used for both ca.pem and ca.key, left world-writable:
    // its mode must not reach the key.
    std::fs::write(ca.join("ca.tmp"), "").unwrap();
    chmod(&ca.join("ca.tmp"), 0o666);
    init(&ca);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert_eq!(mode(&ca.join("server.key")), 0o600);
    assert_eq!(mode(&ca.join("ca.pem")), 0o644);

    // A key made readable by mistake, and a stale wide `.previous`: renewing makes both private.
    chmod(&ca.join("server.key"), 0o644);
    std::fs::write(ca.join("server.key.previous"), "").unwrap();
    chmod(&ca.join("server.key.previous"), 0o666);
    let old_key = std::fs::read(ca.join("server.key")).unwrap();
    run_ok(
        controller()
            .args(["ca", "server", "--dir"])
            .arg(&ca)
            .args(["--san", "127.0.0.1"]),
    );
    assert_eq!(mode(&ca.join("server.key")), 0o600);
    assert_eq!(mode(&ca.join("server.key.previous")), 0o600);
    assert_eq!(
        std::fs::read(ca.join("server.key.previous")).unwrap(),
        old_key
    );
    assert_ne!(std::fs::read(ca.join("server.key")).unwrap(), old_key);

    // A node key written over an older, wider one.
    let out_dir = dir.path().join("certs");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("n1.key"), "old").unwrap();
    chmod(&out_dir.join("n1.key"), 0o644);
    run_ok(
        controller()
            .args(["ca", "issue", "n1", "--dir"])
            .arg(&ca)
            .arg("--out-dir")
            .arg(&out_dir),
    );
    assert_eq!(mode(&out_dir.join("n1.key")), 0o600);
    assert_eq!(mode(&out_dir.join("n1.pem")), 0o644);
    assert_eq!(
        names(&out_dir),
        ["ca.pem", "n1.key", "n1.pem"].map(String::from).into()
    );
}

#[test]
fn revoke_by_serial_keeps_the_nodes_other_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    init(&ca);
    for _ in 0..2 {
        run_ok(
            controller()
                .args(["ca", "issue", "n1", "--dir"])
                .arg(&ca)
                .arg("--out-dir")
                .arg(dir.path().join("certs")),
        );
    }
    let d = CaDir::new(&ca);
    let serials: Vec<String> = d
        .issued()
        .unwrap()
        .certs
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(serials.len(), 2);
    // As openssl prints it: upper case, colon-separated bytes.
    let openssl_style = serials[0]
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let revoke_serial = |serial: &str| {
        controller()
            .args(["ca", "revoke", "--serial", serial, "--dir"])
            .arg(&ca)
            .output()
            .unwrap()
    };
    let out = revoke_serial(&openssl_style);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("revoked serial {} of node n1", serials[0])));
    assert_eq!(d.revoked().unwrap().serials(), [serials[0].clone()].into());
    let list = controller()
        .args(["ca", "list", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    let list = text(&list);
    assert!(
        list.contains(&format!("n1\t{}\trevoked", serials[0])),
        "{list}"
    );
    assert!(
        list.contains(&format!("n1\t{}\tvalid", serials[1])),
        "{list}"
    );

    // Again: nothing new, so it fails and says why.
    let out = revoke_serial(&serials[0]);
    assert!(!out.status.success());
    assert!(text(&out).contains("revoked already"), "{}", text(&out));
    let out = revoke_serial("not-hex");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a hexadecimal serial"),
        "{}",
        text(&out)
    );
    // Neither a node nor a serial, or both: refused by the command line.
    let out = controller()
        .args(["ca", "revoke", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = controller()
        .args(["ca", "revoke", "n1", "--serial", &serials[1], "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // By node: the other certificate only.
    run_ok(controller().args(["ca", "revoke", "n1", "--dir"]).arg(&ca));
    assert_eq!(
        d.revoked().unwrap().serials(),
        serials.iter().cloned().collect()
    );
}

/// The CLI with `args` against `api`, reading tokens from `data_dir`.
fn cli(api: &str, data_dir: &Path, args: &[&str]) -> Output {
    let out = controller()
        .args(args)
        .args(["--api", api, "--data-dir"])
        .arg(data_dir)
        .env_remove("NODEWARDEN_API")
        .output()
        .unwrap();
    eprintln!(
        "$ nodewarden-controller {args:?} --api {api}\n{}",
        text(&out)
    );
    out
}

#[test]
fn cli_reads_the_servers_token_format_and_keeps_tokens_off_plain_http_networks() {
    let lab = Lab::new("");
    lab.wait_service(true, "stopped");
    // The server's own format: a comment, a named token, the next token of a rotation.
    let (token1, token2) = (
        "alice-token-0123456789abcdef",
        "rotated-token-0123456789abcdef",
    );
    std::fs::write(
        lab.path("data/api.token"),
        format!("# operators (rotation: the new line first)\nalice {token1}\n{token2}\n"),
    )
    .unwrap();
    let data = lab.path("data");
    let out = cli(&lab.api(), &data, &["action", "status", "--node", "n1"]);
    assert!(out.status.success(), "{}", text(&out));
    // The server took the first token, alice's: the audit log names her (once the store has
    // written the entry; the rotated token reads it).
    let actors = wait_for(
        "the action in the audit log",
        Duration::from_secs(20),
        || {
            let (status, events) = lab.get_as(token2, "/api/v1/events?node=n1").ok()?;
            assert_eq!(status, 200, "{events}");
            let actors: Vec<String> = events
                .as_array()?
                .iter()
                .filter(|e| e["kind"] == "operation")
                .filter_map(|e| e["actor"].as_str().map(str::to_string))
                .collect();
            (!actors.is_empty()).then_some(actors)
        },
    );
    assert_eq!(actors, ["alice"]);

    // Plain http:// to a host other than this one: refused before any connection. 0.0.0.0 is
    // not loopback by name but reaches this host, so a listener shows nothing was attempted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for api in [
        format!("http://0.0.0.0:{port}"),
        "http://10.1.2.3:9180".to_string(),
    ] {
        let out = cli(&api, &data, &["nodes"]);
        assert!(!out.status.success());
        let said = text(&out);
        assert!(
            said.contains("refusing to send the API token over plain http://"),
            "{said}"
        );
        assert!(said.contains("--insecure-http"), "{said}");
    }
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the CLI connected although it refused"
    );
    // With --insecure-http it goes ahead (here: to this controller).
    let api = format!("http://0.0.0.0:{}", lab.admin_port);
    let out = cli(&api, &data, &["nodes", "--json", "--insecure-http"]);
    assert!(out.status.success(), "{}", text(&out));
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes[0]["name"], "n1", "{nodes}");

    // A token file with no usable token is an error naming the file and the line.
    let bad = lab.path("bad.token");
    std::fs::write(&bad, "# nothing usable\nshort\n").unwrap();
    let out = controller()
        .args(["nodes", "--api", &lab.api(), "--token-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains(&bad.display().to_string()) && said.contains("line 2"),
        "{said}"
    );
}
