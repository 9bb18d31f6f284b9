//! `perf`: per-CPU perf_event counters (hardware, software, hardware-cache) and kernel
//! tracepoints, as node_exporter 1.12.1 (collector/perf_linux.go over hodgesds/perf-utils
//! v0.7.0) reports them.
//!
//! At build time one counting event is opened per metric and CPU (`perf_event_open(2)`, pid
//! -1, `disabled|inherit|exclude_hv`, read format `TOTAL_TIME_ENABLED|TOTAL_TIME_RUNNING`)
//! and enabled; the fds stay open and each scrape is one `read(2)` per fd. Tracepoints are one
//! event group per CPU (leader + members, `PERF_FORMAT_GROUP`), one `read(2)` per CPU. The CPUs
//! are `--collector.perf.cpus` (Go's syntax: `0,2,4-7,8-15:2`) or `0..n` where n is the number
//! of CPUs in the process's affinity mask (Go's `runtime.NumCPU`).
//!
//! Decisions, matching what 1.12.1 does:
//! - An event that cannot be opened (hardware counters in a VM without a vPMU, stalled-cycle
//!   events on Intel, no permission as non-root) is silently left out: perf-utils'
//!   `HasProfilers` is always true, so the Go constructor never fails for them. Such a metric
//!   simply has no sample (no family when no CPU has it).
//! - An unknown name in `--collector.perf.{hardware,software,cache}-profilers` is logged; when
//!   no name is known the set is "all" (perf-utils' zero value), which is every emitted metric
//!   of that kind.
//! - A bad `--collector.perf.cpus` or `--collector.perf.tracepoint`, an unknown tracepoint
//!   (no tracefs mount in /proc/mounts, no `events/<sub>/<event>/id`), or a tracepoint group that
//!   cannot be opened fails the build, as NewPerfCollector's error does.
//! - A failed read of a hardware, cache or tracepoint counter fails the collection (success 0)
//!   after reporting the rest; that CPU's values of that kind are dropped, as perf-utils drops
//!   the whole profile. (1.12.1 stops at the first failure of its randomly ordered map walk.)
//!   A failed read of a software counter drops only that sample, as perf-utils does.
//! - Events 1.12.1 opens but never reports (bus cycles, cpu/task clock, alignment and emulation
//!   faults, L1I read hits, NUMA node cache events) are not opened at all.
//! - A tracepoint family is a counter named without `_total` (`node_perf_sched_sched_switch`),
//!   as 1.12.1 names it.
//! - Deviations: the tracefs mount is looked up in `<path.procfs>/mounts` (perf-utils reads
//!   /proc/mounts) and resolved under `--path.rootfs`; fds are opened close-on-exec; a CPU
//!   range with a stride ≤ 0 is an error (Go loops forever).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use clap::{Arg, ArgAction, Command};

use super::flags::{add_bool_flag, bool_flag};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Paths,
    Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "perf",
    default_enabled: false,
    flags: perf_flags,
    build,
};

const CPUS_FLAG: &str = "collector.perf.cpus";
const TRACEPOINT_FLAG: &str = "collector.perf.tracepoint";
const NO_HW_FLAG: &str = "collector.perf.disable-hardware-profilers";
const HW_FLAG: &str = "collector.perf.hardware-profilers";
const NO_SW_FLAG: &str = "collector.perf.disable-software-profilers";
const SW_FLAG: &str = "collector.perf.software-profilers";
const NO_CACHE_FLAG: &str = "collector.perf.disable-cache-profilers";
const CACHE_FLAG: &str = "collector.perf.cache-profilers";

fn strings(command: Command, name: &'static str, help: &'static str) -> Command {
    command.arg(
        Arg::new(name)
            .long(name)
            .action(ArgAction::Append)
            .help(help),
    )
}

fn perf_flags(command: Command) -> Command {
    let command = command.arg(
        Arg::new(CPUS_FLAG)
            .long(CPUS_FLAG)
            .default_value("")
            .help("List of CPUs from which perf metrics should be collected"),
    );
    let mut command = strings(
        command,
        TRACEPOINT_FLAG,
        "perf tracepoint that should be collected",
    );
    for (disable, disable_help, list, list_help) in [
        (
            NO_HW_FLAG,
            "disable perf hardware profilers",
            HW_FLAG,
            "perf hardware profilers that should be collected",
        ),
        (
            NO_SW_FLAG,
            "disable perf software profilers",
            SW_FLAG,
            "perf software profilers that should be collected",
        ),
        (
            NO_CACHE_FLAG,
            "disable perf cache profilers",
            CACHE_FLAG,
            "perf cache profilers that should be collected",
        ),
    ] {
        command = add_bool_flag(command, disable, false, disable_help);
        command = strings(command, list, list_help);
    }
    command
}

// perf_event_open(2) ABI constants (include/uapi/linux/perf_event.h).
const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_TYPE_HW_CACHE: u32 = 3;
const PERF_FORMAT_TOTAL_TIME_ENABLED: u64 = 1 << 0;
const PERF_FORMAT_TOTAL_TIME_RUNNING: u64 = 1 << 1;
const PERF_FORMAT_GROUP: u64 = 1 << 3;
const PERF_SAMPLE_IDENTIFIER: u64 = 1 << 16;
const ATTR_DISABLED: u64 = 1 << 0;
const ATTR_INHERIT: u64 = 1 << 1;
const ATTR_EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_IOC_FLAG_GROUP: libc::c_ulong = 1;

// Hardware-cache event ids: cache | op << 8 | result << 16.
const fn cache(id: u64, write: bool, miss: bool) -> u64 {
    id | (write as u64) << 8 | (miss as u64) << 16
}
const L1D: u64 = 0;
const L1I: u64 = 1;
const LL: u64 = 2;
const DTLB: u64 = 3;
const ITLB: u64 = 4;
const BPU: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProfilerKind {
    Hardware,
    Software,
    Cache,
}

/// One reported counter: the name perf_linux.go's `--collector.perf.*-profilers` knows it by,
/// its metric and HELP, and the event.
struct EventSpec {
    flag_name: &'static str,
    metric: &'static str,
    help: &'static str,
    kind: ProfilerKind,
    config: u64,
}

const fn ev(
    kind: ProfilerKind,
    flag_name: &'static str,
    config: u64,
    metric: &'static str,
    help: &'static str,
) -> EventSpec {
    EventSpec {
        flag_name,
        metric,
        help,
        kind,
        config,
    }
}

use ProfilerKind::{Cache, Hardware, Software};

static EVENTS: &[EventSpec] = &[
    ev(
        Hardware,
        "CpuCycles",
        0,
        "node_perf_cpucycles_total",
        "Number of CPU cycles (frequency scaled)",
    ),
    ev(
        Hardware,
        "CpuInstr",
        1,
        "node_perf_instructions_total",
        "Number of CPU instructions",
    ),
    ev(
        Hardware,
        "CacheRef",
        2,
        "node_perf_cache_refs_total",
        "Number of cache references (non frequency scaled)",
    ),
    ev(
        Hardware,
        "CacheMisses",
        3,
        "node_perf_cache_misses_total",
        "Number of cache misses",
    ),
    ev(
        Hardware,
        "BranchInstr",
        4,
        "node_perf_branch_instructions_total",
        "Number of CPU branch instructions",
    ),
    ev(
        Hardware,
        "BranchMisses",
        5,
        "node_perf_branch_misses_total",
        "Number of CPU branch misses",
    ),
    ev(
        Hardware,
        "StalledCyclesFrontend",
        7,
        "node_perf_stalled_cycles_frontend_total",
        "Number of stalled frontend CPU cycles",
    ),
    ev(
        Hardware,
        "StalledCyclesBackend",
        8,
        "node_perf_stalled_cycles_backend_total",
        "Number of stalled backend CPU cycles",
    ),
    ev(
        Hardware,
        "RefCpuCycles",
        9,
        "node_perf_ref_cpucycles_total",
        "Number of CPU cycles",
    ),
    ev(
        Software,
        "PageFault",
        2,
        "node_perf_page_faults_total",
        "Number of page faults",
    ),
    ev(
        Software,
        "ContextSwitch",
        3,
        "node_perf_context_switches_total",
        "Number of context switches",
    ),
    ev(
        Software,
        "CpuMigration",
        4,
        "node_perf_cpu_migrations_total",
        "Number of CPU process migrations",
    ),
    ev(
        Software,
        "MinorFault",
        5,
        "node_perf_minor_faults_total",
        "Number of minor page faults",
    ),
    ev(
        Software,
        "MajorFault",
        6,
        "node_perf_major_faults_total",
        "Number of major page faults",
    ),
    ev(
        Cache,
        "L1DataReadHit",
        cache(L1D, false, false),
        "node_perf_cache_l1d_read_hits_total",
        "Number L1 data cache read hits",
    ),
    ev(
        Cache,
        "L1DataReadMiss",
        cache(L1D, false, true),
        "node_perf_cache_l1d_read_misses_total",
        "Number L1 data cache read misses",
    ),
    ev(
        Cache,
        "L1DataWriteHit",
        cache(L1D, true, false),
        "node_perf_cache_l1d_write_hits_total",
        "Number L1 data cache write hits",
    ),
    ev(
        Cache,
        "L1InstrReadMiss",
        cache(L1I, false, true),
        "node_perf_cache_l1_instr_read_misses_total",
        "Number instruction L1 instruction read misses",
    ),
    ev(
        Cache,
        "LLReadHit",
        cache(LL, false, false),
        "node_perf_cache_ll_read_hits_total",
        "Number last level read hits",
    ),
    ev(
        Cache,
        "LLReadMiss",
        cache(LL, false, true),
        "node_perf_cache_ll_read_misses_total",
        "Number last level read misses",
    ),
    ev(
        Cache,
        "LLWriteHit",
        cache(LL, true, false),
        "node_perf_cache_ll_write_hits_total",
        "Number last level write hits",
    ),
    ev(
        Cache,
        "LLWriteMiss",
        cache(LL, true, true),
        "node_perf_cache_ll_write_misses_total",
        "Number last level write misses",
    ),
    ev(
        Cache,
        "DataTLBReadHit",
        cache(DTLB, false, false),
        "node_perf_cache_tlb_data_read_hits_total",
        "Number of data TLB read hits",
    ),
    ev(
        Cache,
        "DataTLBReadMiss",
        cache(DTLB, false, true),
        "node_perf_cache_tlb_data_read_misses_total",
        "Number of data TLB read misses",
    ),
    ev(
        Cache,
        "DataTLBWriteHit",
        cache(DTLB, true, false),
        "node_perf_cache_tlb_data_write_hits_total",
        "Number of data TLB write hits",
    ),
    ev(
        Cache,
        "DataTLBWriteMiss",
        cache(DTLB, true, true),
        "node_perf_cache_tlb_data_write_misses_total",
        "Number of data TLB write misses",
    ),
    ev(
        Cache,
        "InstrTLBReadHit",
        cache(ITLB, false, false),
        "node_perf_cache_tlb_instr_read_hits_total",
        "Number instruction TLB read hits",
    ),
    ev(
        Cache,
        "InstrTLBReadMiss",
        cache(ITLB, false, true),
        "node_perf_cache_tlb_instr_read_misses_total",
        "Number instruction TLB read misses",
    ),
    ev(
        Cache,
        "BPUReadHit",
        cache(BPU, false, false),
        "node_perf_cache_bpu_read_hits_total",
        "Number BPU read hits",
    ),
    ev(
        Cache,
        "BPUReadMiss",
        cache(BPU, false, true),
        "node_perf_cache_bpu_read_misses_total",
        "Number BPU read misses",
    ),
];

impl ProfilerKind {
    fn perf_type(self) -> u32 {
        match self {
            Hardware => PERF_TYPE_HARDWARE,
            Software => PERF_TYPE_SOFTWARE,
            Cache => PERF_TYPE_HW_CACHE,
        }
    }
}

/// A configured tracepoint, `subsystem:event`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracepoint {
    subsystem: String,
    event: String,
}

/// What the flags ask for.
#[derive(Debug)]
struct Config {
    cpus: Vec<i64>,
    tracepoints: Vec<Tracepoint>,
    /// Indices into [`EVENTS`].
    events: Vec<usize>,
}

fn flag_error(flag: &str, reason: impl Into<String>) -> BuildError {
    BuildError::Flag {
        flag: flag.to_string(),
        reason: reason.into(),
    }
}

/// `--collector.perf.cpus` as perfCPUFlagToCPUs parses it: `N`, `A-B` and `A-B:stride`,
/// comma separated.
fn parse_cpus(flag: &str) -> Result<Vec<i64>, String> {
    let atoi = |s: &str| {
        s.parse::<i64>()
            .map_err(|e| format!("strconv.Atoi: parsing {s:?}: {e}"))
    };
    let mut cpus = Vec::new();
    for subset in flag.split(',') {
        if !subset.contains('-') {
            cpus.push(atoi(subset)?);
            continue;
        }
        let stride_set: Vec<&str> = subset.split(':').collect();
        let stride = if stride_set.len() == 2 {
            atoi(stride_set[1])?
        } else {
            1
        };
        let range: Vec<&str> = stride_set[0].split('-').collect();
        if range.len() != 2 {
            return Err(format!("invalid flag value {flag:?}"));
        }
        let (start, end) = (atoi(range[0])?, atoi(range[1])?);
        if stride <= 0 {
            return Err(format!("invalid stride in {subset:?}"));
        }
        let mut cpu = start;
        while cpu <= end {
            cpus.push(cpu);
            cpu += stride;
        }
    }
    Ok(cpus)
}

fn parse_tracepoints<'a>(
    values: impl Iterator<Item = &'a String>,
) -> Result<Vec<Tracepoint>, String> {
    values
        .map(|value| match value.split(':').collect::<Vec<_>>()[..] {
            [subsystem, event] => Ok(Tracepoint {
                subsystem: subsystem.to_string(),
                event: event.to_string(),
            }),
            _ => Err(format!("invalid tracepoint config {value}")),
        })
        .collect()
}

/// The events of `kind` a `--collector.perf.<kind>-profilers` list selects (every one when the
/// list is empty or names none it knows).
fn select(kind: ProfilerKind, names: &[&str], events: &mut Vec<usize>) {
    let of_kind = || {
        EVENTS
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.kind == kind)
    };
    let mut chosen: Vec<usize> = Vec::new();
    for name in names {
        match of_kind().find(|(_, e)| e.flag_name == *name) {
            Some((i, _)) => chosen.push(i),
            None => tracing::error!("Unknown {} profiler: {name}", kind_word(kind)),
        }
    }
    if chosen.is_empty() {
        chosen = of_kind().map(|(i, _)| i).collect();
    }
    chosen.sort_unstable();
    chosen.dedup();
    events.extend(chosen);
}

fn kind_word(kind: ProfilerKind) -> &'static str {
    match kind {
        Hardware => "hardware",
        Software => "software",
        Cache => "cache",
    }
}

impl Config {
    fn from_flags(ctx: &BuildContext<'_>) -> Result<Config, BuildError> {
        let cpus = match ctx.flag(CPUS_FLAG) {
            None | Some("") => (0..affinity_cpu_count()).collect(),
            Some(flag) => parse_cpus(flag).map_err(|e| flag_error(CPUS_FLAG, e))?,
        };
        let many = |id: &str| -> Vec<String> {
            ctx.matches
                .try_get_many::<String>(id)
                .ok()
                .flatten()
                .map(|v| v.cloned().collect())
                .unwrap_or_default()
        };
        let tracepoints = parse_tracepoints(many(TRACEPOINT_FLAG).iter())
            .map_err(|e| flag_error(TRACEPOINT_FLAG, e))?;
        let mut events = Vec::new();
        for (kind, disable, list) in [
            (Hardware, NO_HW_FLAG, HW_FLAG),
            (Software, NO_SW_FLAG, SW_FLAG),
            (Cache, NO_CACHE_FLAG, CACHE_FLAG),
        ] {
            if !bool_flag(ctx, disable) {
                let names = many(list);
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                select(kind, &names, &mut events);
            }
        }
        Ok(Config {
            cpus,
            tracepoints,
            events,
        })
    }
}

/// Go's `runtime.NumCPU`: the CPUs in this process's affinity mask.
fn affinity_cpu_count() -> i64 {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            i64::from(libc::CPU_COUNT(&set))
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get() as i64)
        }
    }
}

/// The tracepoint's id from tracefs (`<mount>/events/<subsystem>/<event>/id`), the tracefs
/// mount being the first in the mount table.
fn tracepoint_id(paths: &Paths, tp: &Tracepoint) -> Result<u64, String> {
    let mounts_path = paths.proc("mounts");
    let mounts = std::fs::read_to_string(&mounts_path).map_err(|e| {
        format!(
            "Failed to get tracefs mount: {}: {e}",
            mounts_path.display()
        )
    })?;
    let mount = mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[2] == "tracefs")
        .map(|f| f[1].to_string())
        .ok_or("Mount for tracefs not mounted")?;
    let id_path = paths
        .root(&mount)
        .join("events")
        .join(&tp.subsystem)
        .join(&tp.event)
        .join("id");
    let text = std::fs::read_to_string(&id_path).map_err(|e| {
        format!(
            "Failed to get tracepoint config for {}:{}: {e}",
            tp.subsystem, tp.event
        )
    })?;
    let first = text.lines().next().unwrap_or("");
    first
        .parse::<u64>()
        .map_err(|e| format!("{}: {first:?}: {e}", id_path.display()))
}

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER5 (112 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}

fn perf_event_open(attr: &PerfEventAttr, cpu: i64, group_fd: i32) -> io::Result<OwnedFd> {
    let cpu = libc::c_int::try_from(cpu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: attr is a valid perf_event_attr of the size it declares; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            -1 as libc::c_long,
            cpu as libc::c_long,
            group_fd as libc::c_long,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn enable(fd: &OwnedFd, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: PERF_EVENT_IOC_ENABLE takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where a counter's `read(2)` comes from: a perf fd (with a group's members kept open), or,
/// in tests, fixed bytes (`None`: the read fails).
enum Reader {
    Perf {
        fd: OwnedFd,
        _members: Vec<OwnedFd>,
    },
    #[cfg(test)]
    Fixed(Option<Vec<u8>>),
}

impl Reader {
    /// Reads into `buf` as perf-utils does: zeroed first, so a short read decodes as zeros.
    fn read(&self, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        match self {
            Reader::Perf { fd, .. } => {
                // SAFETY: buf is a valid writable buffer of buf.len() bytes.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast::<libc::c_void>(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            #[cfg(test)]
            Reader::Fixed(bytes) => {
                let bytes = bytes
                    .as_ref()
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                Ok(())
            }
        }
    }
}

/// Opens the events; the host's perf_event_open, or a fixture in tests.
trait Opener {
    /// One enabled counting event on `cpu` (an error: the event is left out).
    fn single(&mut self, perf_type: u32, config: u64, cpu: i64) -> io::Result<Reader>;
    /// An enabled group of tracepoint events on `cpu`, read through its leader.
    fn group(&mut self, ids: &[u64], cpu: i64) -> io::Result<Reader>;
}

struct HostOpener;

impl Opener for HostOpener {
    fn single(&mut self, perf_type: u32, config: u64, cpu: i64) -> io::Result<Reader> {
        let attr = PerfEventAttr {
            type_: perf_type,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config,
            sample_type: PERF_SAMPLE_IDENTIFIER,
            read_format: PERF_FORMAT_TOTAL_TIME_RUNNING | PERF_FORMAT_TOTAL_TIME_ENABLED,
            flags: ATTR_DISABLED | ATTR_EXCLUDE_HV | ATTR_INHERIT,
            ..Default::default()
        };
        let fd = perf_event_open(&attr, cpu, -1)?;
        enable(&fd, 0)?;
        Ok(Reader::Perf {
            fd,
            _members: Vec::new(),
        })
    }

    fn group(&mut self, ids: &[u64], cpu: i64) -> io::Result<Reader> {
        let mut fds: Vec<OwnedFd> = Vec::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            let attr = PerfEventAttr {
                type_: PERF_TYPE_TRACEPOINT,
                size: std::mem::size_of::<PerfEventAttr>() as u32,
                config: id,
                sample_type: PERF_SAMPLE_IDENTIFIER,
                read_format: PERF_FORMAT_TOTAL_TIME_RUNNING
                    | PERF_FORMAT_TOTAL_TIME_ENABLED
                    | PERF_FORMAT_GROUP,
                flags: if i == 0 {
                    ATTR_DISABLED | ATTR_EXCLUDE_HV
                } else {
                    ATTR_EXCLUDE_HV
                },
                ..Default::default()
            };
            let leader = fds.first().map_or(-1, AsRawFd::as_raw_fd);
            fds.push(perf_event_open(&attr, cpu, leader)?);
        }
        if fds.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let fd = fds.remove(0);
        enable(&fd, PERF_IOC_FLAG_GROUP)?;
        Ok(Reader::Perf { fd, _members: fds })
    }
}

/// The value of a single counter read with `TOTAL_TIME_ENABLED|TOTAL_TIME_RUNNING`:
/// `{ value, time_enabled, time_running }`, native-endian u64s. perf-utils reports the raw
/// value (not scaled by enabled/running).
fn decode_single(buf: &[u8; 24]) -> u64 {
    u64::from_ne_bytes(buf[0..8].try_into().unwrap_or_default())
}

/// The values of a group read with `GROUP|TOTAL_TIME_ENABLED|TOTAL_TIME_RUNNING`:
/// `{ nr, time_enabled, time_running, values[nr] }`; perf-utils takes as many values as the
/// group has events, whatever `nr` says.
fn decode_group(buf: &[u8], out: &mut [u64]) {
    for (i, v) in out.iter_mut().enumerate() {
        let at = 24 + 8 * i;
        *v = buf
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes);
    }
}

/// One opened counter: where it reads from and which sample it feeds.
struct Single {
    reader: Reader,
    kind: ProfilerKind,
    cpu: usize,
    slot: usize,
}

/// One CPU's tracepoint group and the samples its values feed, in tracepoint order.
struct Group {
    reader: Reader,
    slots: Vec<usize>,
}

/// A family in output order, with its samples' slots in CPU-label order.
struct FamilyOut {
    name: String,
    help: String,
    slots: Vec<usize>,
}

struct PerfCollector {
    /// CPU labels, indexed by the position of the CPU in the configured list.
    cpu_labels: Vec<String>,
    /// The CPU (label index) of each slot.
    slot_cpu: Vec<usize>,
    singles: Vec<Single>,
    groups: Vec<Group>,
    families: Vec<FamilyOut>,
    values: Vec<Option<u64>>,
    group_buf: Vec<u8>,
    group_values: Vec<u64>,
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let config = Config::from_flags(ctx)?;
    Ok(Box::new(PerfCollector::open(
        &config,
        ctx.paths,
        &mut HostOpener,
    )?))
}

impl PerfCollector {
    fn open(
        config: &Config,
        paths: &Paths,
        opener: &mut dyn Opener,
    ) -> Result<PerfCollector, BuildError> {
        // Go keys its profilers by CPU: a CPU listed twice is profiled once.
        let mut cpus = config.cpus.clone();
        cpus.sort_unstable();
        cpus.dedup();
        let cpu_labels: Vec<String> = cpus.iter().map(i64::to_string).collect();

        let mut families: Vec<FamilyOut> = Vec::new();
        let mut slot_cpu = Vec::new();
        let mut new_slot = |family: &mut FamilyOut, cpu: usize| {
            family.slots.push(slot_cpu.len());
            slot_cpu.push(cpu);
            slot_cpu.len() - 1
        };

        // Tracepoints first, as NewPerfCollector configures them.
        let mut groups = Vec::new();
        if !config.tracepoints.is_empty() {
            let mut ids = Vec::with_capacity(config.tracepoints.len());
            let first = families.len();
            for tp in &config.tracepoints {
                ids.push(tracepoint_id(paths, tp).map_err(|e| flag_error(TRACEPOINT_FLAG, e))?);
                families.push(FamilyOut {
                    name: format!("node_perf_{}_{}", tp.subsystem, tp.event),
                    help: format!("Perf tracepoint {}:{}", tp.subsystem, tp.event),
                    slots: Vec::new(),
                });
            }
            for (cpu_index, &cpu) in cpus.iter().enumerate() {
                let reader = opener.group(&ids, cpu).map_err(|e| {
                    flag_error(
                        TRACEPOINT_FLAG,
                        format!("opening the tracepoint group on CPU {cpu}: {e}"),
                    )
                })?;
                let slots = (first..first + ids.len())
                    .map(|f| new_slot(&mut families[f], cpu_index))
                    .collect();
                groups.push(Group { reader, slots });
            }
        }

        let mut singles = Vec::new();
        for &event in &config.events {
            let spec = &EVENTS[event];
            let mut family = FamilyOut {
                name: spec.metric.to_string(),
                help: spec.help.to_string(),
                slots: Vec::new(),
            };
            for (cpu_index, &cpu) in cpus.iter().enumerate() {
                match opener.single(spec.kind.perf_type(), spec.config, cpu) {
                    Ok(reader) => {
                        let slot = new_slot(&mut family, cpu_index);
                        singles.push(Single {
                            reader,
                            kind: spec.kind,
                            cpu: cpu_index,
                            slot,
                        });
                    }
                    Err(e) => tracing::debug!(
                        metric = spec.metric,
                        cpu,
                        error = %e,
                        "perf event unavailable"
                    ),
                }
            }
            if !family.slots.is_empty() {
                families.push(family);
            }
        }

        // Output order: families by name, samples by CPU label (client_golang sorts both).
        families.sort_by(|a, b| a.name.cmp(&b.name));
        for family in &mut families {
            family
                .slots
                .sort_by(|&a, &b| cpu_labels[slot_cpu[a]].cmp(&cpu_labels[slot_cpu[b]]));
        }
        let n_tp = config.tracepoints.len();
        Ok(PerfCollector {
            values: vec![None; slot_cpu.len()],
            cpu_labels,
            slot_cpu,
            singles,
            groups,
            families,
            group_buf: vec![0; 24 + 8 * n_tp],
            group_values: vec![0; n_tp],
        })
    }

    /// Reads every counter into `values`; the first hard failure (hardware, cache or
    /// tracepoint read) is returned after all were read.
    fn read_all(&mut self) -> Result<(), CollectorError> {
        self.values.fill(None);
        let mut failed: Option<CollectorError> = None;
        // (kind, cpu) whose profile failed: perf-utils drops the whole profile.
        let mut dropped: Vec<(ProfilerKind, usize)> = Vec::new();
        let mut buf = [0u8; 24];
        for single in &self.singles {
            match single.reader.read(&mut buf) {
                Ok(()) => self.values[single.slot] = Some(decode_single(&buf)),
                Err(e) if single.kind != Software => {
                    dropped.push((single.kind, single.cpu));
                    failed.get_or_insert_with(|| {
                        CollectorError::io(
                            PathBuf::from(format!(
                                "perf_event {} cpu {}",
                                kind_word(single.kind),
                                self.cpu_labels[single.cpu]
                            )),
                            e,
                        )
                    });
                }
                Err(_) => {}
            }
        }
        if !dropped.is_empty() {
            for single in &self.singles {
                if dropped.contains(&(single.kind, single.cpu)) {
                    self.values[single.slot] = None;
                }
            }
        }
        for group in &self.groups {
            match group.reader.read(&mut self.group_buf) {
                Ok(()) => {
                    decode_group(&self.group_buf, &mut self.group_values);
                    for (&slot, &v) in group.slots.iter().zip(&self.group_values) {
                        self.values[slot] = Some(v);
                    }
                }
                Err(e) => {
                    let cpu = group.slots.first().map_or(0, |&s| self.slot_cpu[s]);
                    failed.get_or_insert_with(|| {
                        CollectorError::io(
                            PathBuf::from(format!(
                                "perf_event tracepoints cpu {}",
                                self.cpu_labels[cpu]
                            )),
                            e,
                        )
                    });
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

impl Collector for PerfCollector {
    fn update(
        &mut self,
        _ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let read = self.read_all();
        for family in &self.families {
            if !family.slots.iter().any(|&s| self.values[s].is_some()) {
                continue;
            }
            let mut writer = out.family(&family.name, &family.help, Kind::Counter)?;
            for &slot in &family.slots {
                if let Some(value) = self.values[slot] {
                    let cpu = self.cpu_labels[self.slot_cpu[slot]].as_str();
                    writer.sample(&[("cpu", cpu)], value as f64)?;
                }
            }
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::collector::testing;

    /// Opens events from `hw-perf/perf/counters` (see the comments there).
    struct FixtureOpener {
        singles: HashMap<(u32, u64, i64), u64>,
        groups: HashMap<i64, HashMap<u64, u64>>,
    }

    impl FixtureOpener {
        fn load(root: &std::path::Path) -> FixtureOpener {
            let text = std::fs::read_to_string(root.join("perf/counters")).unwrap();
            let mut opener = FixtureOpener {
                singles: HashMap::new(),
                groups: HashMap::new(),
            };
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let f: Vec<&str> = line.split_whitespace().collect();
                match f[0] {
                    "group" => {
                        let values = f[2..]
                            .iter()
                            .map(|kv| {
                                let (k, v) = kv.split_once('=').unwrap();
                                (k.parse().unwrap(), v.parse().unwrap())
                            })
                            .collect();
                        opener.groups.insert(f[1].parse().unwrap(), values);
                    }
                    kind => {
                        let perf_type = match kind {
                            "hardware" => PERF_TYPE_HARDWARE,
                            "software" => PERF_TYPE_SOFTWARE,
                            _ => PERF_TYPE_HW_CACHE,
                        };
                        opener.singles.insert(
                            (perf_type, hex(f[1]), f[2].parse().unwrap()),
                            f[3].parse().unwrap(),
                        );
                    }
                }
            }
            opener
        }
    }

    fn single_bytes(value: u64) -> Vec<u8> {
        // value, time_enabled, time_running (3600 s, all of it on the PMU).
        [value, 3_600_000_000_000, 3_600_000_000_000]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect()
    }

    impl Opener for FixtureOpener {
        fn single(&mut self, perf_type: u32, config: u64, cpu: i64) -> io::Result<Reader> {
            self.singles
                .get(&(perf_type, config, cpu))
                .map(|&v| Reader::Fixed(Some(single_bytes(v))))
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        }

        fn group(&mut self, ids: &[u64], cpu: i64) -> io::Result<Reader> {
            let group = self
                .groups
                .get(&cpu)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
            let mut words = vec![ids.len() as u64, 3_600_000_000_000, 3_600_000_000_000];
            for id in ids {
                words.push(
                    *group
                        .get(id)
                        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?,
                );
            }
            Ok(Reader::Fixed(Some(
                words.iter().flat_map(|v| v.to_ne_bytes()).collect(),
            )))
        }
    }

    fn config(args: &[&str], paths: &Paths) -> Result<Config, BuildError> {
        let matches = crate::cli::command()
            .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
            .expect("arguments parse");
        Config::from_flags(&BuildContext {
            matches: &matches,
            paths,
        })
    }

    const GOLDEN_ARGS: &[&str] = &[
        "--collector.perf.cpus=0-2,10",
        "--collector.perf.tracepoint=sched:sched_switch",
        "--collector.perf.tracepoint=block:block_rq_issue",
    ];

    #[test]
    fn golden() {
        testing::assert_renders_golden("hw-perf", "perf", |paths| {
            let config = config(GOLDEN_ARGS, paths).unwrap();
            let mut opener = FixtureOpener::load(&testing::fixture("hw-perf"));
            Box::new(PerfCollector::open(&config, paths, &mut opener).unwrap())
        });
    }

    fn fixture_collector(args: &[&str]) -> (PerfCollector, Paths) {
        let paths = Paths::fixture(&testing::fixture("hw-perf"));
        let config = config(args, &paths).unwrap();
        let mut opener = FixtureOpener::load(&testing::fixture("hw-perf"));
        let collector = PerfCollector::open(&config, &paths, &mut opener).unwrap();
        (collector, paths)
    }

    #[test]
    fn cpu_flag_syntax() {
        assert_eq!(parse_cpus("3"), Ok(vec![3]));
        assert_eq!(parse_cpus("0,2,4-6"), Ok(vec![0, 2, 4, 5, 6]));
        // perf_linux.go's "1-10:5 should yield 1,5,10" comment is wrong; its code gives 1,6.
        assert_eq!(parse_cpus("1-10:5"), Ok(vec![1, 6]));
        assert_eq!(parse_cpus("0-3:2,8"), Ok(vec![0, 2, 8]));
        // A third ":" part: no stride is parsed, the range is used.
        assert_eq!(parse_cpus("0-2:1:9"), Ok(vec![0, 1, 2]));
        assert_eq!(parse_cpus("5-3"), Ok(vec![]));
        for bad in [
            "", "a", "1,", "1-2-3", "1-", "1-3:x", "1-3:0", "1-3:-1", "2:1",
        ] {
            assert!(parse_cpus(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tracepoint_flag_syntax() {
        let ok = ["sched:sched_switch".to_string()];
        assert_eq!(
            parse_tracepoints(ok.iter()),
            Ok(vec![Tracepoint {
                subsystem: "sched".into(),
                event: "sched_switch".into()
            }])
        );
        for bad in ["sched", "a:b:c", ""] {
            let v = [bad.to_string()];
            assert!(parse_tracepoints(v.iter()).is_err(), "{bad:?}");
        }
    }

    fn metrics(events: &[usize]) -> Vec<&'static str> {
        events.iter().map(|&i| EVENTS[i].metric).collect()
    }

    #[test]
    fn profiler_selection() {
        let mut events = Vec::new();
        select(
            Software,
            &["MajorFault", "ContextSwitch", "Bogus"],
            &mut events,
        );
        assert_eq!(
            metrics(&events),
            [
                "node_perf_context_switches_total",
                "node_perf_major_faults_total"
            ]
        );
        // Nothing known: perf-utils' zero value, every profiler of the kind.
        let mut events = Vec::new();
        select(Hardware, &["BusCycles"], &mut events);
        assert_eq!(events.len(), 9);
        let mut events = Vec::new();
        select(Cache, &[], &mut events);
        assert_eq!(events.len(), 16);
        // Names of another kind are unknown to this one.
        let mut events = Vec::new();
        select(Cache, &["PageFault", "BPUReadMiss"], &mut events);
        assert_eq!(metrics(&events), ["node_perf_cache_bpu_read_misses_total"]);
    }

    #[test]
    fn disable_flags_and_lists() {
        let paths = Paths::fixture(&testing::fixture("hw-perf"));
        let c = config(
            &[
                "--collector.perf.disable-hardware-profilers",
                "--collector.perf.disable-cache-profilers",
                "--collector.perf.software-profilers=PageFault",
                "--collector.perf.cpus=1",
            ],
            &paths,
        )
        .unwrap();
        assert_eq!(c.cpus, [1]);
        assert_eq!(metrics(&c.events), ["node_perf_page_faults_total"]);
        assert!(config(&["--collector.perf.cpus=x"], &paths).is_err());
        assert!(config(&["--collector.perf.tracepoint=sched"], &paths).is_err());
    }

    #[test]
    fn decoders() {
        let mut buf = [0u8; 24];
        buf.copy_from_slice(&single_bytes(42));
        assert_eq!(decode_single(&buf), 42);
        let words: Vec<u8> = [2u64, 10, 10, 7, 9]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let mut out = [0u64; 2];
        decode_group(&words, &mut out);
        assert_eq!(out, [7, 9]);
        // Short buffer: missing values read as zero, as perf-utils' zeroed buffer gives.
        let mut out = [1u64; 3];
        decode_group(&words, &mut out);
        assert_eq!(out, [7, 9, 0]);
    }

    #[test]
    fn unknown_tracepoint_or_no_tracefs_fails_the_build() {
        let paths = Paths::fixture(&testing::fixture("hw-perf"));
        let mut opener = FixtureOpener::load(&testing::fixture("hw-perf"));
        let c = config(&["--collector.perf.tracepoint=sched:sched_wakeup"], &paths).unwrap();
        assert!(PerfCollector::open(&c, &paths, &mut opener).is_err());
        let no_tracefs = Paths::fixture(&testing::fixture("basic"));
        let c = config(
            &["--collector.perf.tracepoint=sched:sched_switch"],
            &no_tracefs,
        )
        .unwrap();
        assert!(PerfCollector::open(&c, &no_tracefs, &mut opener).is_err());
    }

    #[test]
    fn unavailable_events_leave_no_family() {
        // CPU 5 has no counters in the fixture: nothing opens, the collector is empty.
        let (collector, paths) = fixture_collector(&["--collector.perf.cpus=5"]);
        assert!(collector.families.is_empty());
        let text = testing::render("perf", Box::new(collector), paths);
        assert!(!text.contains("node_perf_"), "{text}");
        assert!(text.contains("node_scrape_collector_success{collector=\"perf\"} 1"));
    }

    #[test]
    fn failed_reads() {
        let (mut collector, paths) = fixture_collector(&["--collector.perf.cpus=0,1"]);
        let cycles_cpu1 = collector
            .singles
            .iter()
            .position(|s| s.kind == Hardware && collector.cpu_labels[s.cpu] == "1")
            .unwrap();
        collector.singles[cycles_cpu1].reader = Reader::Fixed(None);
        let page_faults_cpu0 = collector
            .singles
            .iter()
            .position(|s| s.kind == Software && collector.cpu_labels[s.cpu] == "0")
            .unwrap();
        collector.singles[page_faults_cpu0].reader = Reader::Fixed(None);
        let text = testing::render("perf", Box::new(collector), paths);
        // CPU 1's hardware profile is dropped, the scrape reports the failure.
        assert!(
            !text.contains("node_perf_instructions_total{cpu=\"1\"}"),
            "{text}"
        );
        assert!(
            text.contains("node_perf_instructions_total{cpu=\"0\"}"),
            "{text}"
        );
        assert!(
            text.contains("node_perf_cache_ll_read_hits_total{cpu=\"1\"}"),
            "{text}"
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"perf\"} 0"));
        // A software read failure drops only that sample.
        assert!(
            !text.contains("node_perf_page_faults_total{cpu=\"0\"}"),
            "{text}"
        );
        assert!(
            text.contains("node_perf_context_switches_total{cpu=\"0\"}"),
            "{text}"
        );
    }

    /// The real kernel's software events (we run as root; skipped only when not root and
    /// `CI` is not `true`).
    #[test]
    fn host_software_events() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root && std::env::var("CI").as_deref() != Ok("true") {
            eprintln!("skipped: not root");
            return;
        }
        let paths = Paths::default();
        let collector = testing::build_with(
            &REGISTRATION,
            &[
                "--collector.perf",
                "--collector.perf.cpus=0",
                "--collector.perf.disable-hardware-profilers",
                "--collector.perf.disable-cache-profilers",
            ],
            &paths,
        );
        let text = testing::render("perf", collector, paths);
        for metric in [
            "node_perf_context_switches_total{cpu=\"0\"} ",
            "node_perf_cpu_migrations_total{cpu=\"0\"} ",
            "node_perf_major_faults_total{cpu=\"0\"} ",
            "node_perf_minor_faults_total{cpu=\"0\"} ",
            "node_perf_page_faults_total{cpu=\"0\"} ",
        ] {
            assert!(text.contains(metric), "{metric} missing:\n{text}");
        }
        assert!(text.contains("node_scrape_collector_success{collector=\"perf\"} 1"));
    }
}
