//! A FUSE filesystem that hangs, for the fault tests (issue 14, cases 6 and 8): a mount whose
//! `statfs` or `unlink` never answers, as a dead NFS server or a stuck disk leaves a node.
//!
//!     hung_fuse --mount DIR --hang statfs,unlink --pid-file FILE -- COMMAND [ARG...]
//!
//! Runs as root. Enters a new mount namespace (every mount made private first, so nothing leaks
//! to the host) and a new PID namespace, mounts a `fuse` filesystem on DIR through /dev/fuse
//! (there is no fusermount here: `mount(2)` with `fd=N,rootmode=40000,user_id=0,group_id=0`),
//! then forks COMMAND as PID 1 of the new PID namespace with its own /proc (so its
//! /proc/1/mountinfo lists the FUSE mount) and writes COMMAND's PID, as this namespace numbers
//! it, to FILE. This process serves the filesystem: the root is an empty directory in which
//! every name looks up as a one-byte file; the operations named by `--hang` are read and never
//! answered until SIGUSR1 (then the held ones are answered and nothing hangs any more).
//!
//! Cleanup needs nothing from the caller: COMMAND dies with this process (PR_SET_PDEATHSIG),
//! this process exits when COMMAND does, closing /dev/fuse aborts the connection (a blocked
//! call fails with ENOTCONN), and the mount namespace, with the mount, goes away with its last
//! process.

use std::ffi::{CString, OsString};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::sync::{Arc, Mutex};

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_UNLINK: u32 = 10;
const FUSE_OPEN: u32 = 14;
const FUSE_STATFS: u32 = 17;
const FUSE_RELEASE: u32 = 18;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_READDIR: u32 = 28;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_ACCESS: u32 = 34;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;

const IN_HEADER: usize = 40;
const ROOT: u64 = 1;

struct Args {
    mount: std::path::PathBuf,
    hang: Vec<u32>,
    pid_file: std::path::PathBuf,
    command: Vec<OsString>,
}

fn usage() -> ! {
    eprintln!("usage: hung_fuse --mount DIR [--hang statfs,unlink] --pid-file FILE -- COMMAND...");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = std::env::args_os().skip(1);
    let (mut mount, mut hang, mut pid_file) = (None, Vec::new(), None);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--mount") => mount = args.next().map(Into::into),
            Some("--pid-file") => pid_file = args.next().map(Into::into),
            Some("--hang") => {
                let list = args.next().unwrap_or_else(|| usage());
                for op in list.to_string_lossy().split(',').filter(|s| !s.is_empty()) {
                    hang.push(match op {
                        "statfs" => FUSE_STATFS,
                        "unlink" => FUSE_UNLINK,
                        "getattr" => FUSE_GETATTR,
                        "lookup" => FUSE_LOOKUP,
                        _ => usage(),
                    });
                }
            }
            Some("--") => break,
            _ => usage(),
        }
    }
    let command: Vec<OsString> = args.collect();
    match (mount, pid_file) {
        (Some(mount), Some(pid_file)) if !command.is_empty() => Args {
            mount,
            hang,
            pid_file,
            command,
        },
        _ => usage(),
    }
}

fn check(what: &str, rc: libc::c_int) {
    if rc < 0 {
        eprintln!("hung_fuse: {what}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
}

fn cstring(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("no NUL in arguments")
}

/// What the server shares with its SIGUSR1 thread.
struct State {
    hang: Vec<u32>,
    /// Requests read and not answered: (unique, opcode).
    held: Vec<(u64, u32)>,
}

fn main() {
    let args = parse_args();
    // SIGUSR1 is taken by a thread with sigwait: blocked here, before any thread exists.
    // SAFETY: plain signal-mask calls on a local set.
    let mut usr1: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut usr1);
        libc::sigaddset(&mut usr1, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &usr1, std::ptr::null_mut());
    }
    // SAFETY: open(2) of a constant path.
    let own = unsafe {
        libc::open(
            c"/proc/self/ns/pid".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    check("opening /proc/self/ns/pid", own);
    // SAFETY: unshare/mount with valid NUL-terminated strings; failures are checked.
    unsafe {
        check(
            "unshare(CLONE_NEWNS | CLONE_NEWPID)",
            libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID),
        );
        check(
            "making every mount private",
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
        );
    }
    // SAFETY: open(2) of a constant path.
    let fuse = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    check("opening /dev/fuse", fuse);
    let options = cstring(format!("fd={fuse},rootmode=40000,user_id=0,group_id=0").as_bytes());
    let target = cstring(args.mount.as_os_str().as_bytes());
    // SAFETY: mount(2) with valid strings.
    check("mounting the fuse filesystem", unsafe {
        libc::mount(
            c"hung_fuse".as_ptr(),
            target.as_ptr(),
            c"fuse".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    });

    let argv: Vec<CString> = args.command.iter().map(|a| cstring(a.as_bytes())).collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // SAFETY: fork in a single-threaded process; the child only makes async-signal-safe calls
    // (prctl, mount, sigprocmask, execvp, _exit) before exec.
    let child = unsafe { libc::fork() };
    check("fork", child);
    if child == 0 {
        // SAFETY: see above; all pointers stay valid until exec.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // PID 1 of the new PID namespace: a /proc of its own (in the private mount
            // namespace only), so /proc/1/mountinfo is this namespace's mount table.
            if libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) < 0
            {
                libc::_exit(126);
            }
            libc::close(fuse);
            libc::sigprocmask(libc::SIG_UNBLOCK, &usr1, std::ptr::null_mut());
            libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    // A process whose children go to another PID namespace cannot start threads (EINVAL):
    // point its children back at its own namespace, now that the one child is made.
    // SAFETY: open/setns/close on a constant path.
    // (Opened before the fork: the child's /proc then covers this mount namespace's /proc.)
    unsafe {
        check(
            "setns back to our own PID namespace",
            libc::setns(own, libc::CLONE_NEWPID),
        );
        libc::close(own);
    }
    // The child's PID as this (the caller's) PID namespace numbers it.
    let tmp = args.pid_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{child}\n")).expect("writing the pid file");
    std::fs::rename(&tmp, &args.pid_file).expect("renaming the pid file");

    let state = Arc::new(Mutex::new(State {
        hang: args.hang,
        held: Vec::new(),
    }));
    // COMMAND's end is this process's end (the connection then aborts).
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        eprintln!("hung_fuse: command exited ({status:#x})");
        std::process::exit(0);
    });
    let release_state = state.clone();
    std::thread::spawn(move || {
        loop {
            let mut signal = 0;
            // SAFETY: sigwait on the blocked set.
            unsafe { libc::sigwait(&usr1, &mut signal) };
            let mut state = release_state.lock().unwrap();
            state.hang.clear();
            for (unique, opcode) in std::mem::take(&mut state.held) {
                eprintln!("hung_fuse: answering held request {unique} (opcode {opcode})");
                answer(fuse, unique, opcode, &[], 0);
            }
        }
    });
    serve(fuse, &state);
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap())
}

fn serve(fuse: libc::c_int, state: &Mutex<State>) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: read(2) into a buffer we own.
        let n = unsafe { libc::read(fuse, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOENT) | Some(libc::EAGAIN) => continue,
                // Unmounted or aborted.
                _ => {
                    eprintln!("hung_fuse: connection ended: {e}");
                    std::process::exit(0);
                }
            }
        }
        let request = &buf[..n as usize];
        if request.len() < IN_HEADER {
            continue;
        }
        let opcode = u32_at(request, 4);
        let unique = u64_at(request, 8);
        let nodeid = u64_at(request, 16);
        let body = &request[IN_HEADER..];
        match opcode {
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => continue,
            FUSE_DESTROY => {
                answer(fuse, unique, opcode, &[], 0);
                std::process::exit(0);
            }
            _ => {}
        }
        {
            let mut state = state.lock().unwrap();
            if state.hang.contains(&opcode) {
                eprintln!("hung_fuse: holding request {unique} (opcode {opcode}) unanswered");
                state.held.push((unique, opcode));
                continue;
            }
        }
        match opcode {
            FUSE_INIT => {
                let mut out = [0u8; 64];
                out[0..4].copy_from_slice(&7u32.to_ne_bytes());
                out[4..8].copy_from_slice(&31u32.to_ne_bytes());
                // max_readahead as the kernel offered.
                out[8..12].copy_from_slice(&body[8..12]);
                out[16..18].copy_from_slice(&16u16.to_ne_bytes()); // max_background
                out[18..20].copy_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
                out[20..24].copy_from_slice(&65536u32.to_ne_bytes()); // max_write
                out[24..28].copy_from_slice(&1u32.to_ne_bytes()); // time_gran
                reply(fuse, unique, 0, &out);
            }
            _ => answer(fuse, unique, opcode, body, nodeid),
        }
    }
}

/// A file's or the root's attributes (`struct fuse_attr`, 88 bytes).
fn attr(nodeid: u64) -> [u8; 88] {
    let mut a = [0u8; 88];
    a[0..8].copy_from_slice(&nodeid.to_ne_bytes());
    let (mode, size, nlink) = if nodeid == ROOT {
        (libc::S_IFDIR | 0o755, 0u64, 2u32)
    } else {
        (libc::S_IFREG | 0o644, 1u64, 1u32)
    };
    a[8..16].copy_from_slice(&size.to_ne_bytes());
    a[60..64].copy_from_slice(&mode.to_ne_bytes());
    a[64..68].copy_from_slice(&nlink.to_ne_bytes());
    a[80..84].copy_from_slice(&4096u32.to_ne_bytes()); // blksize
    a
}

/// Answers one request (`nodeid` is the request's; `body` its argument, empty for a held
/// request answered late, where only the opcode matters).
fn answer(fuse: libc::c_int, unique: u64, opcode: u32, body: &[u8], nodeid: u64) {
    match opcode {
        FUSE_LOOKUP => {
            // Every name is a file; its node id is derived from the name, never cached.
            let name = body.split(|b| *b == 0).next().unwrap_or_default();
            let id = 2 + name
                .iter()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
                % (1 << 40);
            let mut out = Vec::with_capacity(128);
            out.extend_from_slice(&id.to_ne_bytes()); // nodeid
            out.extend_from_slice(&0u64.to_ne_bytes()); // generation
            out.extend_from_slice(&[0u8; 24]); // entry/attr valid (0: no caching)
            out.extend_from_slice(&attr(id));
            reply(fuse, unique, 0, &out);
        }
        FUSE_GETATTR => {
            let mut out = vec![0u8; 16];
            out.extend_from_slice(&attr(nodeid.max(ROOT)));
            reply(fuse, unique, 0, &out);
        }
        FUSE_STATFS => {
            let mut out = [0u8; 80];
            for (i, v) in [1000u64, 500, 400, 100, 50].iter().enumerate() {
                out[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
            }
            out[40..44].copy_from_slice(&4096u32.to_ne_bytes()); // bsize
            out[44..48].copy_from_slice(&255u32.to_ne_bytes()); // namelen
            out[48..52].copy_from_slice(&4096u32.to_ne_bytes()); // frsize
            reply(fuse, unique, 0, &out);
        }
        FUSE_UNLINK | FUSE_RELEASE | FUSE_RELEASEDIR | FUSE_ACCESS => reply(fuse, unique, 0, &[]),
        FUSE_OPEN | FUSE_OPENDIR => reply(fuse, unique, 0, &[0u8; 16]),
        // An empty directory: no entries.
        FUSE_READDIR => reply(fuse, unique, 0, &[]),
        _ => reply(fuse, unique, -libc::ENOSYS, &[]),
    }
}

fn reply(fuse: libc::c_int, unique: u64, error: i32, body: &[u8]) {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&error.to_ne_bytes());
    out.extend_from_slice(&unique.to_ne_bytes());
    out.extend_from_slice(body);
    // SAFETY: write(2) of a buffer we own. A reply to a request the kernel dropped (its caller
    // was killed) fails with ENOENT, which is fine.
    unsafe { libc::write(fuse, out.as_ptr().cast(), out.len()) };
    let _ = std::io::stderr().flush();
}
