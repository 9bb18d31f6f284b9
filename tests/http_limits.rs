//! The limits of both HTTP servers, against real processes on loopback: the agent's `/metrics`
//! and the controller's HTTP API. A slowloris client (headers a byte at a time, or never
//! finished) is disconnected within the header-read timeout; connections beyond the cap are
//! answered 503 (or closed) and a normal request works once they are gone; the processes hold no
//! more descriptors afterwards than before. On the agent: a flood of wrong passwords does not
//! delay a scrape with verified credentials (bcrypt off the server's thread, bounded), and
//! `--web.max-requests=1` answers a second concurrent scrape 503. Needs `cargo build --workspace`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use nodewarden_tests::lab::{Log, run_ok};
use nodewarden_tests::{ChildGuard, bin_path, free_port, wait_for};

/// The header-read timeout the slowloris tests give the servers
/// (`NODEWARDEN_HTTP_HEADER_TIMEOUT_MS`).
const SHORT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The caps (agent/src/http.rs `MAX_CONNECTIONS`, controller/src/admin.rs `MAX_CONNECTIONS`).
const AGENT_MAX_CONNECTIONS: usize = 64;
const CONTROLLER_MAX_CONNECTIONS: usize = 512;
/// How long a test waits for any one answer before failing rather than hanging.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(ANSWER_LIMIT)).unwrap();
    s
}

/// One answer read off a connection: status and body (by Content-Length). `None` when the
/// server closed (or reset) the connection before a whole answer.
fn read_answer(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            Ok(_) => return None,
            Err(e) if is_timeout(&e) => panic!("no answer within {ANSWER_LIMIT:?}"),
            Err(_) => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Sends a GET on `s` (kept alive unless `close`), with extra header lines.
fn send_get(s: &mut TcpStream, path: &str, headers: &str, close: bool) -> std::io::Result<()> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{connection}{headers}\r\n"
    )
}

/// A GET on a connection of its own; `None` when the server closed it without an answer.
fn get(addr: SocketAddr, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = connect(addr);
    send_get(&mut s, path, headers, true).ok()?;
    read_answer(&mut s)
}

/// Reads `s` until the server closes it; how long that took. Fails past `limit`.
fn time_to_close(s: &mut TcpStream, started: Instant, limit: Duration) -> Duration {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            // hyper may say 408 before closing.
            Ok(_) => continue,
            Err(e) if is_timeout(&e) => panic!("the server kept the connection past {limit:?}"),
            Err(_) => return started.elapsed(),
        }
    }
}

/// Two slowloris clients at once, one trickling a header a byte every 100 ms without end, one
/// stopping halfway: both are disconnected within the header-read timeout, while a normal request
/// is answered meanwhile.
fn slowloris(addr: SocketAddr, normal_path: &str) {
    let started = Instant::now();
    let mut trickle = connect(addr);
    let mut writer = trickle.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        let head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        for &b in head.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            // The slowloris's own pace, not a wait for the server.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut stalled = connect(addr);
    stalled.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();

    let (status, _) = get(addr, normal_path, "").expect("a normal request beside the slowloris");
    assert_eq!(status, 200);

    let limit = SHORT_TIMEOUT + Duration::from_secs(3);
    let t1 = time_to_close(&mut trickle, started, limit);
    let t2 = time_to_close(&mut stalled, started, limit);
    eprintln!("trickling connection closed after {t1:?}, stalled one after {t2:?}");
    for t in [t1, t2] {
        assert!(
            t >= SHORT_TIMEOUT - Duration::from_millis(300),
            "closed before the timeout: {t:?}"
        );
    }
    trickler.join().unwrap();
}

/// Opens kept-alive connections, each with one request answered, until one is refused; the
/// connections held and the refused one's answer (`None`: closed without one).
fn fill(
    addr: SocketAddr,
    path: &str,
    cap: usize,
) -> (Vec<TcpStream>, Option<(u16, String)>, usize) {
    let mut held = Vec::new();
    for _ in 0..cap + 1 {
        let mut s = connect(addr);
        send_get(&mut s, path, "", false).unwrap();
        match read_answer(&mut s) {
            Some((200, _)) => held.push(s),
            other => {
                let n = held.len();
                return (held, other, n);
            }
        }
    }
    panic!("{} connections were all served: no cap", cap + 1);
}

/// The connection flood: exactly `cap` connections served, the next answered 503; a burst of
/// more connections at once is refused (503 or closed); once they are all gone a normal request
/// is answered and the descriptors are back to what they were.
fn flood(addr: SocketAddr, pid: u32, path: &str, cap: usize) {
    let baseline = descriptors(pid);
    let (held, refused, served) = fill(addr, path, cap);
    assert_eq!(served, cap, "connections served before the first refusal");
    let (status, body) = refused.expect("the connection beyond the cap is answered");
    assert_eq!(status, 503, "{body}");
    // A burst beyond the cap, all at once: every one is refused, none served.
    let burst: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = connect(addr);
            let _ = send_get(&mut s, path, "", true);
            s
        })
        .collect();
    for mut s in burst {
        match read_answer(&mut s) {
            None | Some((503, _)) => {}
            Some((status, body)) => panic!("served beyond the cap: {status} {body}"),
        }
    }
    drop(held);
    // The server notices the closed connections on its own time.
    let (status, _) = wait_for(
        "a normal request after the flood",
        Duration::from_secs(10),
        || get(addr, path, "").filter(|(s, _)| *s == 200),
    );
    assert_eq!(status, 200);
    wait_for(
        "the server's descriptors back to their count before the flood",
        Duration::from_secs(10),
        || (descriptors(pid) <= baseline).then_some(()),
    );
}

fn start_agent(args: &[String], header_timeout: Option<Duration>) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let mut cmd = Command::new(bin_path("nodewarden-agent"));
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(args)
        .stdout(Stdio::null());
    if let Some(t) = header_timeout {
        cmd.env(
            "NODEWARDEN_HTTP_HEADER_TIMEOUT_MS",
            t.as_millis().to_string(),
        );
    }
    let child = ChildGuard::spawn(&mut cmd);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // The landing page (200, or 401 with basic auth): it does not scrape (a test's textfile
    // directory may hold a FIFO).
    wait_for("the agent to answer", Duration::from_secs(30), || {
        TcpStream::connect(addr).ok()?;
        get(addr, "/", "")
    });
    (child, addr)
}

#[test]
fn agent_disconnects_slowloris_and_caps_connections() {
    let (slow_agent, addr) = start_agent(&[], Some(SHORT_TIMEOUT));
    let pid = slow_agent.pid();
    // The first scrape opens the collectors' sources for good: count descriptors after it.
    assert_eq!(get(addr, "/metrics", "").unwrap().0, 200);
    let baseline = descriptors(pid);
    slowloris(addr, "/metrics");
    wait_for(
        "the agent's descriptors back after the slowloris",
        Duration::from_secs(10),
        || (descriptors(pid) <= baseline).then_some(()),
    );
    drop(slow_agent);

    // The flood with the default timeout, so that held connections stay for the whole test.
    let (agent, addr) = start_agent(&[], None);
    assert_eq!(get(addr, "/metrics", "").unwrap().0, 200);
    flood(addr, agent.pid(), "/", AGENT_MAX_CONNECTIONS);
    assert_eq!(get(addr, "/metrics", "").unwrap().0, 200);
}

fn start_controller(dir: &Path, header_timeout: Option<Duration>) -> (ChildGuard, SocketAddr) {
    let controller = bin_path("nodewarden-controller");
    if !dir.join("ca").exists() {
        run_ok(
            Command::new(&controller)
                .args(["ca", "init", "--dir"])
                .arg(dir.join("ca"))
                .args(["--san", "127.0.0.1"]),
        );
    }
    let link_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    let port = free_port();
    std::fs::write(
        dir.join("controller.toml"),
        format!(
            "[link]\nlisten = \"127.0.0.1:{link_port}\"\nca_dir = \"ca\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[pushgateway]\nurl = \"\"\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(&controller);
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("controller.toml"))
        .env("NODEWARDEN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(t) = header_timeout {
        cmd.env(
            "NODEWARDEN_HTTP_HEADER_TIMEOUT_MS",
            t.as_millis().to_string(),
        );
    }
    let mut child = ChildGuard::spawn(&mut cmd);
    Log::attach(&mut child, "controller").wait("HTTP endpoint listening");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for("the controller to answer", Duration::from_secs(30), || {
        get(addr, "/console/", "").filter(|(s, _)| *s == 200)
    });
    (child, addr)
}

#[test]
fn controller_disconnects_slowloris_and_caps_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (slow, addr) = start_controller(dir.path(), Some(SHORT_TIMEOUT));
    let pid = slow.pid();
    let baseline = descriptors(pid);
    slowloris(addr, "/console/");
    wait_for(
        "the controller's descriptors back after the slowloris",
        Duration::from_secs(10),
        || (descriptors(pid) <= baseline).then_some(()),
    );
    drop(slow);

    let (controller, addr) = start_controller(dir.path(), None);
    flood(
        addr,
        controller.pid(),
        "/console/",
        CONTROLLER_MAX_CONNECTIONS,
    );
}

fn basic(credentials: &str) -> String {
    use base64::Engine;
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

#[test]
fn a_verified_scrape_is_answered_within_a_second_during_a_wrong_password_flood() {
    let dir = tempfile::tempdir().unwrap();
    // Cost 12: each wrong password is a quarter of a second or more of bcrypt, so the flood
    // lasts for seconds.
    let hash = bcrypt::hash("s3cret", 12).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prom: {hash}\n")).unwrap();
    let (agent, addr) = start_agent(&[format!("--web.config.file={}", web.display())], None);
    let valid = basic("prom:s3cret");

    // Prometheus's connection, kept alive between scrapes; its credentials verified once.
    let mut prometheus = connect(addr);
    send_get(&mut prometheus, "/metrics", &valid, false).unwrap();
    assert_eq!(read_answer(&mut prometheus).unwrap().0, 200);
    assert_eq!(get(addr, "/metrics", "").unwrap().0, 401);

    // 200 wrong passwords at once, each on a connection of its own.
    const FLOOD: usize = 200;
    let gate = Arc::new(Barrier::new(FLOOD + 1));
    let answered = Arc::new(AtomicUsize::new(0));
    let (first_tx, first_rx) = mpsc::channel::<()>();
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let (gate, answered, first_tx) = (gate.clone(), answered.clone(), first_tx.clone());
            std::thread::spawn(move || {
                gate.wait();
                let answer = get(addr, "/metrics", &basic(&format!("prom:wrong{i}")));
                answered.fetch_add(1, Ordering::SeqCst);
                let _ = first_tx.send(());
                answer.map_or(0, |(status, _)| status)
            })
        })
        .collect();
    gate.wait();
    // The flood is under way once its first answer is in.
    first_rx.recv_timeout(ANSWER_LIMIT).expect("a flood answer");
    let started = Instant::now();
    send_get(&mut prometheus, "/metrics", &valid, false).unwrap();
    let (status, body) = read_answer(&mut prometheus).expect("the scrape's answer");
    let took = started.elapsed();
    let answered_then = answered.load(Ordering::SeqCst);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("node_load1"), "{body}");
    eprintln!("verified scrape during the flood: {took:?}, {answered_then} flood answers by then");
    assert!(took < Duration::from_secs(1), "the scrape took {took:?}");
    assert!(
        answered_then < FLOOD,
        "the flood was over before the scrape ended: it did not overlap"
    );

    let statuses: Vec<u16> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    eprintln!(
        "flood: {} × 401, {} × 503, {} closed",
        count(401),
        count(503),
        count(0)
    );
    assert_eq!(count(401) + count(503) + count(0), FLOOD, "{statuses:?}");
    assert!(count(401) > 0, "no wrong password was checked");
    // A new connection with the right password is still served.
    assert_eq!(get(addr, "/metrics", &valid).unwrap().0, 200);
    drop(agent);
}

#[test]
fn max_requests_one_refuses_a_second_concurrent_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).unwrap();
    let fifo = textfiles.join("slow.prom");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let (_agent, addr) = start_agent(
        &[
            "--web.max-requests=1".into(),
            format!("--collector.textfile.directory={}", textfiles.display()),
        ],
        None,
    );

    // The first scrape blocks reading the FIFO until this test writes it.
    let first = std::thread::spawn(move || get(addr, "/metrics", ""));
    // Opening the FIFO for writing returns once the agent has opened it for reading: the first
    // scrape is then in flight.
    let (opened_tx, opened_rx) = mpsc::channel();
    let fifo_path = fifo.clone();
    std::thread::spawn(move || {
        let _ = opened_tx.send(std::fs::OpenOptions::new().write(true).open(fifo_path));
    });
    let mut writer = opened_rx
        .recv_timeout(ANSWER_LIMIT)
        .expect("the first scrape opens the FIFO")
        .unwrap();

    let (status, body) = get(addr, "/metrics", "").expect("the second scrape's answer");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("Limit of concurrent requests reached (1)"),
        "{body}"
    );

    writer.write_all(b"nw_http_limits_test 1\n").unwrap();
    drop(writer);
    let (status, body) = first.join().unwrap().expect("the first scrape's answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nw_http_limits_test 1"), "{body}");

    // With the FIFO gone, the next scrape is served.
    std::fs::remove_file(&fifo).unwrap();
    assert_eq!(get(addr, "/metrics", "").unwrap().0, 200);
}

#[test]
fn a_scrape_stuck_on_a_fifo_does_not_hold_the_agent_or_its_exit() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stuck.prom");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let (mut agent, addr) = start_agent(
        &[format!(
            "--collector.textfile.directory={}",
            dir.path().display()
        )],
        None,
    );
    let stuck = std::thread::spawn(move || get(addr, "/metrics", ""));
    let (opened_tx, opened_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = opened_tx.send(std::fs::OpenOptions::new().write(true).open(fifo));
    });
    // Held open and never written: the scrape stays stuck.
    let _writer = opened_rx
        .recv_timeout(ANSWER_LIMIT)
        .expect("the scrape opens the FIFO")
        .unwrap();
    // The server still answers meanwhile.
    assert_eq!(get(addr, "/", "").unwrap().0, 200);
    // SAFETY: kill(2) of the test's own child.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) }, 0);
    let status = wait_for("the agent to exit", Duration::from_secs(10), || {
        agent.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    // The stuck scrape's connection went with the agent.
    assert!(stuck.join().unwrap().is_none_or(|(s, _)| s != 200));
}
