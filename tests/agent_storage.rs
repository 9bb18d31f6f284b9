//! The agent's storage collectors against the real kernel, where a fixture cannot show what the
//! kernel answers: a btrfs filesystem made here on a loop device and mounted in a mount and PID
//! namespace of the agent's own (so /proc/1/mountinfo is the namespace's and nothing is left
//! mounted when the agent ends). Needs root, `unshare` (util-linux) and `mkfs.btrfs`
//! (btrfs-progs, installed by scripts/test.sh).

use std::process::{Command, Stdio};
use std::time::Duration;

use nodewarden_tests::{ChildGuard, bin_path, free_port, get_text, parse_exposition, wait_for};

/// Whether this run can mount filesystems; under CI (or with the services required) it must.
fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = Command::new("mkfs.btrfs").arg("--version").output().is_ok();
    let required = std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("NW_REQUIRE_SERVICES").as_deref() == Ok("1");
    if required {
        assert!(root, "the storage tests need root (mount, loop devices)");
        assert!(tools, "mkfs.btrfs is missing (Debian package btrfs-progs)");
    }
    if !(root && tools) {
        eprintln!("skipped: needs root and mkfs.btrfs");
    }
    root && tools
}

const SIZE: u64 = 256 << 20;
const FS_UUID: &str = "6f1c2a4e-92d3-4b57-a0e8-3c5d7f9b1e20";

#[test]
fn btrfs_devices_come_from_the_ioctls_of_a_mounted_filesystem() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("btrfs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let mkfs = Command::new("mkfs.btrfs")
        .args(["-q", "-f", "-L", "fragments", "-U", FS_UUID])
        .arg(&image)
        .output()
        .unwrap();
    assert!(mkfs.status.success(), "mkfs.btrfs: {mkfs:?}");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();

    let port = free_port();
    let script = format!(
        "mount -o loop '{}' '{}' && exec '{}' --web.listen-address=127.0.0.1:{port} \
         --collector.disable-defaults --collector.btrfs",
        image.display(),
        mnt.display(),
        bin_path("nodewarden-agent").display()
    );
    // --kill-child: the namespace's init (the agent) dies with `unshare`, and the mount with it.
    let _agent = ChildGuard::spawn(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let families = wait_for(
        "the agent in its namespace",
        Duration::from_secs(20),
        || {
            let families = parse_exposition(&get_text(&url)?);
            families
                .contains_key("node_btrfs_device_errors_total")
                .then_some(families)
        },
    );

    let size = &families["node_btrfs_device_size_bytes"];
    let ours: Vec<_> = size
        .samples
        .iter()
        .filter(|s| s.labels.get("uuid").map(String::as_str) == Some(FS_UUID))
        .collect();
    assert_eq!(ours.len(), 1, "one device in our filesystem: {size:?}");
    let device = ours[0].labels["device"].clone();
    let dev_uuid = ours[0].labels["btrfs_dev_uuid"].clone();
    assert!(device.starts_with("loop"), "device {device:?}");
    assert_eq!(dev_uuid.len(), 36, "dashed device uuid {dev_uuid:?}");
    assert_ne!(dev_uuid, FS_UUID);
    assert_eq!(ours[0].value, SIZE as f64);

    let labels = [
        ("uuid", FS_UUID),
        ("device", device.as_str()),
        ("btrfs_dev_uuid", dev_uuid.as_str()),
    ];
    let unused = families["node_btrfs_device_unused_bytes"]
        .value(&labels)
        .expect("unused bytes of our device");
    assert!(
        unused > 0.0 && unused < SIZE as f64,
        "unused {unused} of {SIZE}"
    );
    let errors = &families["node_btrfs_device_errors_total"];
    assert_eq!(errors.kind, "counter");
    for kind in ["write", "read", "flush", "corruption", "generation"] {
        let mut with_type = labels.to_vec();
        with_type.push(("type", kind));
        assert_eq!(errors.value(&with_type), Some(0.0), "{kind} errors");
    }
    let info = &families["node_btrfs_info"];
    assert_eq!(
        info.value(&[("uuid", FS_UUID), ("label", "fragments")]),
        Some(1.0)
    );
    // Linux 6.0 and later: commit statistics (at least the mount's first commit).
    assert!(
        families["node_btrfs_commits_total"]
            .value(&[("uuid", FS_UUID)])
            .is_some()
    );
}
