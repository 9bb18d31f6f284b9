//! The supervisord collector against a real supervisord (Debian's `supervisor`) of the test's
//! own, serving XML-RPC on a loopback port and on a unix socket in a temporary directory, with
//! a program that runs (in a group of another name), one that exited 0 and one that exited 3.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::collector::Paths;
use crate::collector::testing::{assert_golden, build_with, fixture, render};

/// A running supervisord, stopped (with its programs) when dropped.
struct Supervisord {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        // SIGTERM: supervisord stops its programs, then exits.
        // SAFETY: kill(2) on the pid of the child this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn supervisord() -> Option<Supervisord> {
    let daemon = "/usr/bin/supervisord";
    if !Path::new(daemon).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{daemon} is missing (Debian package supervisor)");
        }
        eprintln!("skipped: {daemon} is missing (Debian package supervisor)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = free_tcp_port();
    let conf = dir.path().join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [inet_http_server]\nport=127.0.0.1:{port}\n\n\
             [supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [program:sleeper]\ncommand=sleep 600\nstartsecs=0\n\n\
             [group:web]\nprograms=sleeper\n\n\
             [program:oneshot]\ncommand=true\nstartsecs=0\nautorestart=false\n\n\
             [program:failing]\ncommand=sh -c \"exit 3\"\nstartsecs=0\nautorestart=false\n"
        ),
    )
    .unwrap();
    let child = Command::new(daemon)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start supervisord");
    Some(Supervisord { port, dir, child })
}

/// Calls until the three programs have settled (running, exited, exited): supervisord starts
/// them after it starts serving.
fn settled(endpoint: &xmlrpc::Endpoint) -> Vec<Info> {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let states = xmlrpc::call(endpoint, "supervisor.getAllProcessInfo")
            .ok()
            .and_then(|v| processes(v).ok());
        if let Some(procs) = &states {
            let mut s: Vec<(&str, i64)> =
                procs.iter().map(|p| (p.name.as_str(), p.state)).collect();
            s.sort();
            if s == [("failing", 100), ("oneshot", 100), ("sleeper", 20)] {
                return states.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "supervisord did not settle: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl std::fmt::Debug for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} state {} exit {}",
            self.group, self.name, self.state, self.exit_status
        )
    }
}

/// The start time moves with the clock: replaced by `X` (and checked to be recent).
fn mask(text: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    text.lines()
        .map(|l| {
            if l.starts_with("node_supervisord_start_time_seconds{") {
                let (series, value) = l.rsplit_once(' ').unwrap();
                let t: f64 = value.parse().unwrap();
                assert!((now - t).abs() < 60.0, "{l}");
                format!("{series} X\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

#[test]
fn over_tcp_and_unix_socket() {
    let Some(server) = supervisord() else {
        return;
    };
    let tcp = format!("http://127.0.0.1:{}/RPC2", server.port);
    let unix = format!("unix://{}/supervisor.sock", server.dir.path().display());
    // Settled over the unix socket, which exists once supervisord serves.
    let deadline = Instant::now() + Duration::from_secs(8);
    let unix_endpoint = xmlrpc::Endpoint::parse(&unix).unwrap();
    while xmlrpc::call(&unix_endpoint, "supervisor.getState").is_err() {
        assert!(Instant::now() < deadline, "supervisord does not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    settled(&unix_endpoint);
    for url in [&tcp, &unix] {
        let flag = format!("--collector.supervisord.url={url}");
        let c = build_with(&REGISTRATION, &[&flag], &Paths::default());
        let text = render("supervisord", c, Paths::default());
        assert_golden(
            &fixture("hw-services/golden").join("supervisord.prom"),
            &mask(&text),
        );
    }
    // A method supervisord lacks is a fault, an error.
    let err = xmlrpc::call(&unix_endpoint, "supervisor.noSuchMethod").unwrap_err();
    assert!(err.to_string().contains("UNKNOWN_METHOD"), "{err}");
}

#[test]
fn nothing_listening_is_a_failed_scrape() {
    let flag = format!(
        "--collector.supervisord.url=http://127.0.0.1:{}/RPC2",
        free_tcp_port()
    );
    let c = build_with(&REGISTRATION, &[&flag], &Paths::default());
    let text = render("supervisord", c, Paths::default());
    assert!(!text.contains("node_supervisord_"), "{text}");
    assert!(text.contains("node_scrape_collector_success{collector=\"supervisord\"} 0\n"));
}

#[test]
fn url_flag_then_environment_then_default() {
    let m = |args: &[&str]| {
        crate::cli::command()
            .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
            .unwrap()
    };
    let paths = Paths::default();
    let given = m(&["--collector.supervisord.url=unix:///run/s.sock"]);
    let ctx = BuildContext {
        matches: &given,
        paths: &paths,
    };
    assert_eq!(
        url(&ctx, Some("http://env/RPC2".into())),
        "unix:///run/s.sock"
    );
    let none = m(&[]);
    let ctx = BuildContext {
        matches: &none,
        paths: &paths,
    };
    assert_eq!(url(&ctx, Some("http://env/RPC2".into())), "http://env/RPC2");
    assert_eq!(url(&ctx, None), DEFAULT_URL);
}

#[test]
fn fields_carry_over_as_in_node_exporter() {
    use xmlrpc::Value;
    let s = |k: &str, v: Value| (k.to_string(), v);
    let procs = processes(Value::Array(vec![
        Value::Struct(vec![
            s("name", Value::Str("a".into())),
            s("group", Value::Str("g".into())),
            s("state", Value::Int(20)),
            s("start", Value::Int(100)),
        ]),
        Value::Struct(vec![
            s("name", Value::Str("b".into())),
            s("state", Value::Bool(true)),
        ]),
    ]))
    .unwrap();
    assert_eq!(
        (procs[1].group.as_str(), procs[1].state, procs[1].start),
        ("g", 20, 100)
    );
    assert!(processes(Value::Struct(vec![])).is_err());
    assert!(processes(Value::Array(vec![Value::Int(1)])).is_err());
}
