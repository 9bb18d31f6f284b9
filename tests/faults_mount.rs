//! Issue 14's fault suite, a hung mount on a node: a real FUSE filesystem (tests/src/bin/
//! hung_fuse.rs, in a mount and PID namespace of its own) whose operations are read and never
//! answered, as a dead NFS server leaves them. Case 8: `statfs` hangs; the agent's scrapes keep
//! answering within the mount timeout, the mount is an error series as node_exporter 1.12.1
//! reports it (`device_error="mountpoint timeout"`), other mounts are still reported, the
//! agent's threads do not pile up, and the mount is monitored again once it answers; Debian's
//! node_exporter under the same hung mount serves the same series (once its own first scrape,
//! which waits for the hung stat, is given up). Case 6,
//! the fragment-deletion half: `unlink` hangs under the device's fragment folder and the agent
//! is SIGKILLed during the deletion; the operator's call ends failed, with the reason, within
//! the link's idle timeout, and the operation has exactly one end in the audit log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodewarden_tests::lab::{Lab, Log};
use nodewarden_tests::{ChildGuard, Family, bin_path, free_port, fuse, wait_for};
use serde_json::Value;

/// The mount timeout the case-8 agent runs with (node_exporter's default is 5 s).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(1);

fn scrape(url: &str) -> (Duration, std::collections::BTreeMap<String, Family>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let started = Instant::now();
    let text = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("scraping {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    (started.elapsed(), nodewarden_tests::parse_exposition(&text))
}

fn value(
    families: &std::collections::BTreeMap<String, Family>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    families.get(name)?.value(labels)
}

#[test]
fn a_hung_mount_is_an_error_series_and_scrapes_keep_answering_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("hung");
    std::fs::create_dir(&mnt).unwrap();
    let mnt_text = mnt.display().to_string();
    let pid_file = dir.path().join("agent.pid");
    let port = free_port();
    let wrapper = fuse::wrapper(&mnt, "statfs", &pid_file);
    let mut server = ChildGuard::spawn(
        Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(bin_path("nodewarden-agent"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--collector.filesystem.mount-timeout={}ms",
                MOUNT_TIMEOUT.as_millis()
            ))
            .env(
                "NODEWARDEN_LOG",
                "info,nodewarden_agent::collector::filesystem=debug",
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = Log::attach(&mut server, "agent");
    let agent_pid = fuse::program_pid(&pid_file);
    log.wait("listening");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let hung = [
        ("mountpoint", mnt_text.as_str()),
        ("fstype", "fuse"),
        ("device", "hung_fuse"),
    ];
    let threads_before = fuse::threads(agent_pid);

    // The first scrape meets the hung statfs: it answers after the mount timeout, not later.
    let (took, first) = scrape(&url);
    eprintln!("first scrape: {took:?}, {threads_before} threads before");
    assert!(
        took >= MOUNT_TIMEOUT && took < MOUNT_TIMEOUT + Duration::from_secs(2),
        "{took:?}"
    );
    // The mount is the namespace's only: the test's own mount table never shows it.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains("hung_fuse"), "{host_mounts}");
    let error = [&hung[..], &[("device_error", "mountpoint timeout")]].concat();
    assert_eq!(
        value(&first, "node_filesystem_device_error", &error),
        Some(1.0)
    );
    assert_eq!(value(&first, "node_filesystem_readonly", &error), Some(0.0));
    assert_eq!(value(&first, "node_filesystem_size_bytes", &hung), None);
    // Other mounts still reported: the root filesystem with its figures.
    let root = [("mountpoint", "/"), ("device_error", "")];
    assert_eq!(
        value(&first, "node_filesystem_device_error", &root),
        Some(0.0)
    );
    assert!(value(&first, "node_filesystem_size_bytes", &root).is_some_and(|v| v > 0.0));
    assert_eq!(
        value(
            &first,
            "node_scrape_collector_success",
            &[("collector", "filesystem")]
        ),
        Some(1.0)
    );
    assert_eq!(
        log.count("mount point timed out, it is being labeled as stuck"),
        1
    );

    // Later scrapes skip the stuck mount: each answers well within the timeout, still with the
    // error series, and no thread is added however many scrapes come (the count is taken after
    // two of them, once the fresh stat worker for the other mounts exists).
    let scrapes = 40;
    let mut slowest = Duration::ZERO;
    let mut threads_stuck = 0;
    for n in 0..scrapes {
        if n == 2 {
            threads_stuck = fuse::threads(agent_pid);
        }
        let (took, families) = scrape(&url);
        slowest = slowest.max(took);
        assert!(took < MOUNT_TIMEOUT, "{took:?}");
        assert_eq!(
            value(&families, "node_filesystem_device_error", &error),
            Some(1.0)
        );
    }
    let threads_after = fuse::threads(agent_pid);
    let stuck_workers = fuse::thread_ids(agent_pid, "filesystem-stat");
    eprintln!(
        "threads: {:?}; stat workers {stuck_workers:?}",
        fuse::thread_names(agent_pid)
    );
    assert!(!stuck_workers.is_empty());
    eprintln!(
        "{scrapes} scrapes with the mount stuck: slowest {slowest:?}; threads {threads_before} \
         before, {threads_stuck} after the first three, {threads_after} after all"
    );
    assert!(threads_after <= threads_stuck, "threads piled up");
    assert!(stuck_workers.len() <= 2, "{stuck_workers:?}");
    assert!(threads_stuck <= threads_before + 4);
    assert_eq!(
        log.count("mount point timed out, it is being labeled as stuck"),
        1,
        "the hung statfs was tried once"
    );
    assert!(log.count("mount point is in an unresponsive state") >= scrapes);

    // The server answers the held statfs: the mount is monitored again, with its figures, and
    // the abandoned stat thread is gone.
    fuse::release(server.pid());
    let back = Instant::now();
    let families = wait_for("the mount reported again", Duration::from_secs(10), || {
        let (_, families) = scrape(&url);
        value(&families, "node_filesystem_size_bytes", &hung).map(|_| families)
    });
    assert_eq!(
        value(&families, "node_filesystem_size_bytes", &hung),
        Some(1000.0 * 4096.0)
    );
    let ok = [&hung[..], &[("device_error", "")]].concat();
    assert_eq!(
        value(&families, "node_filesystem_device_error", &ok),
        Some(0.0)
    );
    wait_for(
        "the abandoned stat thread gone",
        Duration::from_secs(10),
        || {
            let now = fuse::thread_ids(agent_pid, "filesystem-stat");
            (!stuck_workers.iter().any(|t| now.contains(t)) && now.len() <= 1).then_some(())
        },
    );
    eprintln!(
        "mount back {:?} after the release; {} threads",
        back.elapsed(),
        fuse::threads(agent_pid)
    );
    assert_eq!(log.count("mount point has recovered"), 1);
}

/// The scheduler state of each thread of a process (`D`, `S`, `Z`, …); empty once it is reaped.
fn task_states(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
            let after = stat.get(stat.rfind(')')? + 2..)?;
            after.split_whitespace().next().map(str::to_string)
        })
        .collect()
}

fn events(lab: &Lab) -> Vec<Value> {
    lab.get_json("/api/v1/events?node=n1&limit=1000")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn agent_sigkilled_during_a_hung_fragment_deletion_ends_it_failed_with_a_reason() {
    let mut lab = Lab::new("");
    lab.stop_agent();
    // Device 7's fragment folder is the FUSE mount, whose unlink never answers.
    let mnt = lab.path("fragments");
    let pid_file = lab.path("agent.pid");
    lab.start_agent_via(&fuse::wrapper(&mnt, "unlink", &pid_file), &[]);
    let agent_pid = fuse::program_pid(&pid_file);
    let server_pid = lab.agent.as_ref().unwrap().0.pid();
    lab.agent_log().wait("connected to the controller");
    lab.wait_service(true, "stopped");

    let mut cli = {
        let mut cmd = Command::new(bin_path("nodewarden-controller"));
        cmd.args(["delete-fragments", "--pairs", "-"])
            .args(["--requested-by", "test", "--api", &lab.api(), "--data-dir"])
            .arg(lab.path("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ChildGuard::spawn(&mut cmd)
    };
    {
        use std::io::Write as _;
        let mut stdin = cli.0.stdin.take().unwrap();
        stdin.write_all(b"101 7\n102 7\n").unwrap();
    }
    // The deletion is running: the agent's unlink is held by the filesystem.
    lab.agent_log().wait("holding request");
    let started = Instant::now();
    // SAFETY: plain kill(2) of the agent (the test's grandchild).
    unsafe { libc::kill(agent_pid as i32, libc::SIGKILL) };

    // The operator's call returns, failed, within the link's idle timeout (2 s) and margin.
    let status = wait_for("the deletion's answer", Duration::from_secs(30), || {
        cli.0.try_wait().ok()?
    });
    let answered = started.elapsed();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut cli.0.stdout.take().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut cli.0.stderr.take().unwrap(), &mut err).unwrap();
    eprintln!("answer after {answered:?}: {status:?}\n{out}\n{err}");
    assert!(!status.success(), "{out}{err}");
    assert!(out.contains("n1") && out.contains("FAILED"), "{out}{err}");
    assert!(answered < Duration::from_secs(10), "{answered:?}");
    wait_for("n1 offline", Duration::from_secs(10), || {
        (lab.node()?["online"] == false).then_some(())
    });

    // Exactly one end, failed or unknown, with the reason; one request before it.
    let log = wait_for(
        "the deletion's end recorded",
        Duration::from_secs(10),
        || {
            let log = events(&lab);
            log.iter()
                .any(|e| e["kind"] == "operation" && e["action"] != "status")
                .then_some(log)
        },
    );
    let ends: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "operation" && e["action"] != "status")
        .collect();
    let requests: Vec<&Value> = log.iter().filter(|e| e["kind"] == "requested").collect();
    eprintln!("ends: {ends:?}\nrequests: {requests:?}");
    assert_eq!(ends.len(), 1, "{log:?}");
    assert_eq!(requests.len(), 1, "{log:?}");
    assert_eq!(ends[0]["operation_id"], requests[0]["operation_id"]);
    assert!(
        ends[0]["result"] == "failed" || ends[0]["result"] == "unknown",
        "{log:?}"
    );
    assert!(
        ends[0]["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "a reason: {log:?}"
    );

    // The killed agent's thread in unlink cannot finish dying while the kernel holds the
    // request (FUSE waits out a request the server has read); answering it lets the process
    // go, and the namespace with it.
    eprintln!(
        "after the answer, the killed agent's threads: {:?}",
        task_states(agent_pid)
    );
    fuse::release(server_pid);
    wait_for("the killed agent gone", Duration::from_secs(10), || {
        task_states(agent_pid).is_empty().then_some(())
    });
    let (mut server, _) = lab.agent.take().unwrap();
    let server_exit = wait_for("hung_fuse exits", Duration::from_secs(10), || {
        server.0.try_wait().ok()?
    });
    assert!(server_exit.success(), "{server_exit:?}");
}

/// A program in `$PATH`.
fn in_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The same hung mount under the real node_exporter (Debian's 1.5, whose filesystem collector has
/// 1.12.1's stuck-mount logic without the `device_error` label): the scrape that meets the hung statfs does not answer; once the
/// mount is marked stuck, scrapes answer with the series the agent serves (above).
#[test]
fn node_exporter_reports_the_same_hung_mount_the_same_way() {
    if nodewarden_tests::service("NW_TEST_NODE_EXPORTER_URL").is_none() {
        return;
    }
    let exporter = in_path("prometheus-node-exporter").expect("prometheus-node-exporter");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("hung");
    std::fs::create_dir(&mnt).unwrap();
    let mnt_text = mnt.display().to_string();
    let pid_file = dir.path().join("exporter.pid");
    let port = free_port();
    let wrapper = fuse::wrapper(&mnt, "statfs", &pid_file);
    let _server = ChildGuard::spawn(
        Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--collector.filesystem.mount-timeout={}ms",
                MOUNT_TIMEOUT.as_millis()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    fuse::program_pid(&pid_file);
    let base = format!("http://127.0.0.1:{port}");
    wait_for("node_exporter answering", Duration::from_secs(20), || {
        nodewarden_tests::get_text(&format!("{base}/"))
    });
    let bounded = |limit: Duration| -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(limit))
            .build()
            .into()
    };
    // The first scrape: no answer within five mount timeouts.
    let first_limit = 5 * MOUNT_TIMEOUT;
    let started = Instant::now();
    let first = bounded(first_limit).get(format!("{base}/metrics")).call();
    assert!(
        first.is_err(),
        "node_exporter answered a scrape held by the hung statfs"
    );
    eprintln!(
        "node_exporter's first scrape: no answer after {:?}",
        started.elapsed()
    );
    // Now stuck: a scrape answers, with the same series as the agent's.
    let (took, families) = scrape(&format!("{base}/metrics"));
    eprintln!("node_exporter's next scrape: {took:?}");
    // Debian's node_exporter (1.5) predates the `device_error` label; where it is there, it
    // must say what the agent's says.
    let error = [
        ("mountpoint", mnt_text.as_str()),
        ("fstype", "fuse"),
        ("device", "hung_fuse"),
    ];
    assert_eq!(
        value(&families, "node_filesystem_device_error", &error),
        Some(1.0)
    );
    // 1.5 leaves out `readonly` for a mount with an error; 1.12.1 (its source) reports 0 for a
    // stuck one, as the agent does.
    let readonly = value(&families, "node_filesystem_readonly", &error);
    assert!(readonly.is_none() || readonly == Some(0.0), "{readonly:?}");
    for sample in &families["node_filesystem_device_error"].samples {
        if sample.labels.get("mountpoint") == Some(&mnt_text)
            && let Some(label) = sample.labels.get("device_error")
        {
            assert_eq!(label, "mountpoint timeout");
        }
    }
    let hung = [("mountpoint", mnt_text.as_str())];
    assert_eq!(value(&families, "node_filesystem_size_bytes", &hung), None);
    assert_eq!(value(&families, "node_filesystem_mount_info", &hung), None);
}
