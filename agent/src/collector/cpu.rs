//! `cpu`: per-CPU time from /proc/stat (node_cpu_seconds_total, node_cpu_guest_seconds_total),
//! isolated CPUs, thermal throttle counters from sysfs and, with `--collector.cpu.info`,
//! /proc/cpuinfo as node_cpu_info / node_cpu_flag_info / node_cpu_bug_info.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::IndexLabels;
use super::flags::{add_bool_flag, bool_flag, unanchored_regex_flag};
use super::gosyntax::parse_u64;
use super::source::read_attr;
use super::source::{CpuPresence, SourceFile, numbered_paths};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Paths,
    Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "cpu",
    default_enabled: true,
    flags,
    build,
};

const GUEST_FLAG: &str = "collector.cpu.guest";
const INFO_FLAG: &str = "collector.cpu.info";
const FLAGS_INCLUDE_FLAG: &str = "collector.cpu.info.flags-include";
const BUGS_INCLUDE_FLAG: &str = "collector.cpu.info.bugs-include";

/// The kernel's USER_HZ: /proc/stat counts in 1/100 s on every architecture Linux exports it.
const USER_HZ: f64 = 100.0;
/// An idle counter going back by this much means a CPU was hot-plugged; start it afresh.
const JUMP_BACK_SECONDS: f64 = 3.0;
/// More CPUs than Linux supports means the line is garbage, not a reason to allocate.
const MAX_CPUS: usize = 1 << 16;

const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

fn flags(command: clap::Command) -> clap::Command {
    let command = add_bool_flag(
        command,
        GUEST_FLAG,
        true,
        "Enables metric node_cpu_guest_seconds_total",
    );
    add_bool_flag(command, INFO_FLAG, false, "Enables metric cpu_info")
        .arg(
            clap::Arg::new(FLAGS_INCLUDE_FLAG)
                .long(FLAGS_INCLUDE_FLAG)
                .default_value("")
                .help("Filter the `flags` field in cpuInfo with a value that must be a regular expression"),
        )
        .arg(
            clap::Arg::new(BUGS_INCLUDE_FLAG)
                .long(BUGS_INCLUDE_FLAG)
                .default_value("")
                .help("Filter the `bugs` field in cpuInfo with a value that must be a regular expression"),
        )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let flags_include = unanchored_regex_flag(ctx, FLAGS_INCLUDE_FLAG)?;
    let bugs_include = unanchored_regex_flag(ctx, BUGS_INCLUDE_FLAG)?;
    // Either filter turns the info metrics on, as in node_exporter.
    let info = bool_flag(ctx, INFO_FLAG) || flags_include.is_some() || bugs_include.is_some();
    Ok(Box::new(CpuCollector {
        guest: bool_flag(ctx, GUEST_FLAG),
        info: info.then(|| CpuInfoState {
            flags_include,
            bugs_include,
            rows: Vec::new(),
            len: 0,
            source: SourceFile::proc("cpuinfo"),
            buf: String::new(),
        }),
        isolated: read_isolated(ctx.paths),
        stats: Vec::new(),
        fresh: Vec::new(),
        labels: IndexLabels::default(),
        source: SourceFile::proc("stat"),
        buf: String::new(),
        throttle: Throttle::default(),
    }))
}

struct CpuCollector {
    guest: bool,
    info: Option<CpuInfoState>,
    /// Label values of the isolated CPUs, read once at start as node_exporter does; `None` when
    /// the kernel has no such file.
    isolated: Option<Vec<String>>,
    /// The last values exported per CPU, so counters never go backwards.
    stats: Vec<CpuTimes>,
    /// This scrape's readings, kept so the vector is not reallocated.
    fresh: Vec<CpuTimes>,
    labels: IndexLabels,
    source: SourceFile,
    buf: String,
    throttle: Throttle,
}

/// Seconds per mode: user nice system idle iowait irq softirq steal guest guest_nice.
pub type CpuTimes = [f64; 10];
const IDLE: usize = 3;
const GUEST: usize = 8;
const GUEST_NICE: usize = 9;

/// Parses the per-CPU lines of /proc/stat into `cpus` (indexed by CPU number; numbers missing
/// from the file, such as offline CPUs, read as zero like node_exporter's), in seconds.
pub fn parse_cpu_times(text: &str, cpus: &mut Vec<CpuTimes>, mut malformed: impl FnMut(&str)) {
    cpus.clear();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(id) = fields.next().and_then(|f| f.strip_prefix("cpu")) else {
            continue;
        };
        if id.is_empty() {
            continue; // the "cpu" total line
        }
        let Some(id) = id.parse::<usize>().ok().filter(|&id| id < MAX_CPUS) else {
            malformed(line);
            continue;
        };
        let mut times = [0.0; 10];
        let mut ok = true;
        // Older kernels print fewer columns; the missing ones stay zero.
        for (slot, field) in times.iter_mut().zip(fields) {
            match field.parse::<f64>() {
                Ok(v) => *slot = v / USER_HZ,
                Err(_) => ok = false,
            }
        }
        if !ok {
            malformed(line);
            continue;
        }
        if cpus.len() <= id {
            cpus.resize(id + 1, [0.0; 10]);
        }
        if let Some(slot) = cpus.get_mut(id) {
            *slot = times;
        }
    }
}

/// Folds fresh readings into the exported values: a counter that goes backwards keeps its old
/// value, and an idle counter that jumps back by [`JUMP_BACK_SECONDS`] resets that CPU.
pub fn merge_cpu_times(exported: &mut Vec<CpuTimes>, fresh: &[CpuTimes]) {
    if exported.len() != fresh.len() {
        exported.clear();
        exported.resize(fresh.len(), [0.0; 10]);
    }
    for (old, new) in exported.iter_mut().zip(fresh) {
        if old[IDLE] - new[IDLE] >= JUMP_BACK_SECONDS {
            tracing::debug!("CPU idle counter jumped backwards, possible hotplug; resetting");
            *old = [0.0; 10];
        }
        for (o, n) in old.iter_mut().zip(new) {
            if *n >= *o {
                *o = *n;
            }
        }
    }
}

/// Parses a kernel CPU list such as `0-3,8` (the `isolated` file's format).
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim_end_matches('\n').split(',') {
        if part.is_empty() {
            continue;
        }
        match part.split_once('-') {
            Some((start, end)) => {
                let (start, end): (u32, u32) = (start.parse().ok()?, end.parse().ok()?);
                if end.saturating_sub(start) as usize > MAX_CPUS {
                    return None;
                }
                cpus.extend(start..=end);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

fn read_isolated(paths: &Paths) -> Option<Vec<String>> {
    let path = paths.sys("devices/system/cpu/isolated");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot read isolated CPUs");
            }
            return None;
        }
    };
    let cpus = parse_cpu_list(&text);
    if cpus.is_none() {
        tracing::warn!(path = %path.display(), content = text.trim(), "cannot parse isolated CPUs");
    }
    cpus.map(|cpus| cpus.iter().map(u32::to_string).collect())
}

/// One processor of /proc/cpuinfo, with the fields node_cpu_info carries.
#[derive(Default, Debug, PartialEq)]
pub struct CpuInfoRow {
    pub processor: String,
    pub vendor: String,
    pub family: String,
    pub model: String,
    pub model_name: String,
    pub microcode: String,
    pub stepping: String,
    pub cache_size: String,
    pub physical_id: String,
    pub core_id: String,
    pub flags: String,
    pub bugs: String,
}

impl CpuInfoRow {
    fn clear(&mut self) {
        for field in [
            &mut self.processor,
            &mut self.vendor,
            &mut self.family,
            &mut self.model,
            &mut self.model_name,
            &mut self.microcode,
            &mut self.stepping,
            &mut self.cache_size,
            &mut self.physical_id,
            &mut self.core_id,
            &mut self.flags,
            &mut self.bugs,
        ] {
            field.clear();
        }
    }
}

struct CpuInfoState {
    flags_include: Option<Regex>,
    bugs_include: Option<Regex>,
    /// Rows reused across scrapes; the first `len` are this scrape's.
    rows: Vec<CpuInfoRow>,
    len: usize,
    source: SourceFile,
    buf: String,
}

/// Parses /proc/cpuinfo as node_exporter does on x86 (`key<TAB>: value` blocks, each starting
/// with `processor`) into `rows`, reusing their strings; returns how many processors it found.
/// ARM's `Features` line is taken as the flags.
pub fn parse_cpuinfo(text: &str, rows: &mut Vec<CpuInfoRow>) -> Result<usize, String> {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty()).peekable();
    match lines.peek() {
        Some(first) if first.starts_with("processor") && first.contains(':') => {}
        first => return Err(format!("invalid cpuinfo file: {:?}", first.unwrap_or(&""))),
    }
    let mut len = 0;
    for line in lines {
        // node_exporter splits on ": ", so a key with an empty value ("bugs\t\t:") is ignored.
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let key = key.trim();
        if key == "processor" {
            let number: u32 = value
                .trim()
                .parse()
                .map_err(|_| format!("invalid processor number in {line:?}"))?;
            if rows.len() <= len {
                rows.push(CpuInfoRow::default());
            }
            let row = rows.get_mut(len).ok_or("row vanished")?;
            row.clear();
            use std::fmt::Write;
            let _ = write!(row.processor, "{number}");
            len += 1;
            continue;
        }
        let Some(row) = len.checked_sub(1).and_then(|i| rows.get_mut(i)) else {
            continue;
        };
        let field = match key {
            "vendor" | "vendor_id" => &mut row.vendor,
            "cpu family" => &mut row.family,
            "model" => &mut row.model,
            "model name" => &mut row.model_name,
            "stepping" => &mut row.stepping,
            "microcode" => &mut row.microcode,
            "cache size" => &mut row.cache_size,
            "physical id" => &mut row.physical_id,
            "core id" => &mut row.core_id,
            "flags" | "Features" => &mut row.flags,
            "bugs" => &mut row.bugs,
            _ => continue,
        };
        field.clear();
        field.push_str(value);
    }
    Ok(len)
}

/// A CPU's topology and where its throttle counters are, found by a sysfs scan.
struct ThrottleCpu {
    package: u64,
    core: u64,
    package_label: String,
    core_label: String,
    core_count: PathBuf,
    package_count: PathBuf,
}

/// Thermal throttle counters. The CPU directories and their topology are scanned again only
/// when /sys/devices/system/cpu/present changes, not every scrape.
#[derive(Default)]
struct Throttle {
    present: CpuPresence,
    cpus: Vec<ThrottleCpu>,
    /// Whether any CPU has a thermal_throttle directory (never in VMs): skip reads otherwise.
    any: bool,
    buf: String,
    /// This scrape's values: (index into `cpus` naming the package/core, count).
    packages: Vec<(usize, u64)>,
    cores: Vec<(usize, u64)>,
}

impl Throttle {
    fn rescan(&mut self, paths: &Paths) {
        self.cpus.clear();
        self.any = false;
        let Ok(numbered) = numbered_paths(&paths.sys("devices/system/cpu"), "cpu") else {
            return;
        };
        for (_, cpu) in numbered {
            let read = |rel: &str, buf: &mut String| -> Option<u64> {
                read_attr(&cpu.join(rel), buf).ok().flatten()?;
                parse_u64(buf)
            };
            let Some(package) = read("topology/physical_package_id", &mut self.buf) else {
                tracing::debug!(cpu = %cpu.display(), "CPU is missing physical_package_id");
                continue;
            };
            let Some(core) = read("topology/core_id", &mut self.buf) else {
                tracing::debug!(cpu = %cpu.display(), "CPU is missing core_id");
                continue;
            };
            self.any |= cpu.join("thermal_throttle").is_dir();
            self.cpus.push(ThrottleCpu {
                package,
                core,
                package_label: package.to_string(),
                core_label: core.to_string(),
                core_count: cpu.join("thermal_throttle/core_throttle_count"),
                package_count: cpu.join("thermal_throttle/package_throttle_count"),
            });
        }
    }

    fn update(
        &mut self,
        paths: &Paths,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        if self.present.changed(paths) {
            self.rescan(paths);
        }
        if !self.any {
            return Ok(());
        }
        self.packages.clear();
        self.cores.clear();
        for (i, cpu) in self.cpus.iter().enumerate() {
            let core_seen = self.cores.iter().any(|&(j, _)| {
                self.cpus
                    .get(j)
                    .is_some_and(|c| (c.package, c.core) == (cpu.package, cpu.core))
            });
            if !core_seen && let Some(count) = read_count(&cpu.core_count, &mut self.buf) {
                self.cores.push((i, count));
            }
            let package_seen = self
                .packages
                .iter()
                .any(|&(j, _)| self.cpus.get(j).is_some_and(|c| c.package == cpu.package));
            if !package_seen && let Some(count) = read_count(&cpu.package_count, &mut self.buf) {
                self.packages.push((i, count));
            }
        }
        if !self.packages.is_empty() {
            let mut family = out.family(
                "node_cpu_package_throttles_total",
                "Number of times this CPU package has been throttled.",
                Kind::Counter,
            )?;
            for &(i, count) in &self.packages {
                if let Some(cpu) = self.cpus.get(i) {
                    family.sample(&[("package", &cpu.package_label)], count as f64)?;
                }
            }
        }
        if !self.cores.is_empty() {
            let mut family = out.family(
                "node_cpu_core_throttles_total",
                "Number of times this CPU core has been throttled.",
                Kind::Counter,
            )?;
            for &(i, count) in &self.cores {
                if let Some(cpu) = self.cpus.get(i) {
                    family.sample(
                        &[("package", &cpu.package_label), ("core", &cpu.core_label)],
                        count as f64,
                    )?;
                }
            }
        }
        Ok(())
    }
}

fn read_count(path: &Path, buf: &mut String) -> Option<u64> {
    read_attr(path, buf).ok().flatten()?;
    parse_u64(buf)
}

impl CpuCollector {
    fn update_stat(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.source.read_into(ctx.paths, &mut self.buf)?;
        let path = self.source.display_path();
        parse_cpu_times(&self.buf, &mut self.fresh, |line| ctx.malformed(path, line));
        merge_cpu_times(&mut self.stats, &self.fresh);
        self.labels.ensure(self.stats.len());
        if self.stats.is_empty() {
            return Ok(());
        }
        let mut family = out.family(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            Kind::Counter,
        )?;
        for (i, times) in self.stats.iter().enumerate() {
            let cpu = self.labels.get(i);
            for (mode, value) in MODES.iter().zip(times) {
                family.sample(&[("cpu", cpu), ("mode", mode)], *value)?;
            }
        }
        if self.guest {
            let mut family = out.family(
                "node_cpu_guest_seconds_total",
                "Seconds the CPUs spent in guests (VMs) for each mode.",
                Kind::Counter,
            )?;
            for (i, times) in self.stats.iter().enumerate() {
                let cpu = self.labels.get(i);
                // Guest time is also counted in user and nice; exported separately.
                family.sample(&[("cpu", cpu), ("mode", "user")], times[GUEST])?;
                family.sample(&[("cpu", cpu), ("mode", "nice")], times[GUEST_NICE])?;
            }
        }
        Ok(())
    }

    fn update_isolated(&mut self, out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
        let Some(isolated) = self.isolated.as_ref().filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        let mut family = out.family(
            "node_cpu_isolated",
            "Whether each core is isolated, information from /sys/devices/system/cpu/isolated.",
            Kind::Gauge,
        )?;
        for cpu in isolated {
            family.sample(&[("cpu", cpu)], 1.0)?;
        }
        Ok(())
    }
}

fn update_info(
    state: &mut CpuInfoState,
    ctx: &Context<'_>,
    out: &mut MetricWriter<'_, '_>,
) -> Result<(), CollectorError> {
    state.source.read_into(ctx.paths, &mut state.buf)?;
    state.len =
        parse_cpuinfo(&state.buf, &mut state.rows).map_err(|reason| CollectorError::Parse {
            path: state.source.display_path().to_path_buf(),
            reason,
        })?;
    let rows = state.rows.get(..state.len).unwrap_or_default();
    if rows.is_empty() {
        return Ok(());
    }
    let mut family = out.family(
        "node_cpu_info",
        "CPU information from /proc/cpuinfo.",
        Kind::Gauge,
    )?;
    for row in rows {
        family.sample(
            &[
                ("package", &row.physical_id),
                ("core", &row.core_id),
                ("cpu", &row.processor),
                ("vendor", &row.vendor),
                ("family", &row.family),
                ("model", &row.model),
                ("model_name", &row.model_name),
                ("microcode", &row.microcode),
                ("stepping", &row.stepping),
                ("cachesize", &row.cache_size),
            ],
            1.0,
        )?;
    }
    let Some(first) = rows.first() else {
        return Ok(());
    };
    for (filter, list, name, label, help) in [
        (
            &state.flags_include,
            &first.flags,
            "node_cpu_flag_info",
            "flag",
            "The `flags` field of CPU information from /proc/cpuinfo taken from the first core.",
        ),
        (
            &state.bugs_include,
            &first.bugs,
            "node_cpu_bug_info",
            "bug",
            "The `bugs` field of CPU information from /proc/cpuinfo taken from the first core.",
        ),
    ] {
        let Some(filter) = filter else { continue };
        let mut matching = list
            .split_ascii_whitespace()
            .filter(|v| filter.is_match(v))
            .peekable();
        if matching.peek().is_none() {
            continue;
        }
        let mut family = out.family(name, help, Kind::Gauge)?;
        for value in matching {
            family.sample(&[(label, value)], 1.0)?;
        }
    }
    Ok(())
}

impl Collector for CpuCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.update_stat(ctx, out)?;
        self.update_isolated(out)?;
        self.throttle.update(ctx.paths, out)?;
        if let Some(state) = &mut self.info {
            update_info(state, ctx, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{
        assert_golden, assert_renders_golden, build_with, fixture, render,
    };

    #[test]
    fn golden() {
        assert_renders_golden("basic", "cpu", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn golden_with_info() {
        let root = fixture("basic");
        let paths = Paths::fixture(&root);
        let collector = build_with(
            &REGISTRATION,
            &[
                "--collector.cpu.info",
                "--collector.cpu.info.flags-include=^(aes|avx.?|constant_tsc)$",
                "--collector.cpu.info.bugs-include=spectre",
                "--no-collector.cpu.guest",
            ],
            &paths,
        );
        let text = render("cpu", collector, paths);
        assert_golden(&root.join("golden/cpu-info.prom"), &text);
    }

    #[test]
    fn an_include_filter_alone_turns_info_on() {
        let root = fixture("basic");
        let paths = Paths::fixture(&root);
        let collector = build_with(
            &REGISTRATION,
            &["--collector.cpu.info.bugs-include=^srso$"],
            &paths,
        );
        let text = render("cpu", collector, paths);
        assert!(text.contains("node_cpu_info{"));
        assert!(text.contains("node_cpu_bug_info{bug=\"srso\"} 1"));
        assert!(!text.contains("node_cpu_flag_info"));
    }

    #[test]
    fn a_bad_filter_is_a_build_error() {
        let matches = crate::cli::command()
            .try_get_matches_from(["nodewarden-agent", "--collector.cpu.info.flags-include=("])
            .unwrap();
        let paths = Paths::default();
        let ctx = BuildContext {
            matches: &matches,
            paths: &paths,
        };
        let err = build(&ctx).err().expect("invalid regex rejected");
        assert!(
            err.to_string().contains("collector.cpu.info.flags-include"),
            "{err}"
        );
    }

    #[test]
    fn odd_stat_and_cpuinfo() {
        let root = fixture("odd");
        let paths = Paths::fixture(&root);
        let collector = build_with(&REGISTRATION, &["--collector.cpu.info"], &paths);
        let text = render("cpu", collector, paths);
        assert_golden(&root.join("golden/cpu.prom"), &text);
    }

    #[test]
    fn counters_never_go_backwards_and_hotplug_resets() {
        let mut exported = Vec::new();
        let mut t = [0.0; 10];
        t[0] = 10.0;
        t[IDLE] = 100.0;
        merge_cpu_times(&mut exported, &[t]);
        let mut lower = t;
        lower[0] = 9.0;
        lower[IDLE] = 99.0;
        merge_cpu_times(&mut exported, &[lower]);
        assert_eq!(exported[0][0], 10.0);
        assert_eq!(exported[0][IDLE], 100.0);
        let mut replugged = [0.0; 10];
        replugged[0] = 1.0;
        replugged[IDLE] = 5.0;
        merge_cpu_times(&mut exported, &[replugged]);
        assert_eq!(exported[0], replugged);
    }

    #[test]
    fn stat_lines() {
        let mut cpus = Vec::new();
        let mut bad = Vec::new();
        parse_cpu_times(
            "cpu 1 2 3\ncpu0 100 200 300 400\ncpu2 100 0 0 0 0 0 0 0 50 25\ncpuX 1\ncpu3 1 x\n",
            &mut cpus,
            |l| bad.push(l.to_string()),
        );
        assert_eq!(bad, ["cpuX 1", "cpu3 1 x"]);
        assert_eq!(cpus.len(), 3);
        assert_eq!(cpus[0][..4], [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(cpus[1], [0.0; 10]);
        assert_eq!(cpus[2][GUEST], 0.5);
        assert_eq!(cpus[2][GUEST_NICE], 0.25);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("1-3,7\n"), Some(vec![1, 2, 3, 7]));
        assert_eq!(parse_cpu_list("1-x"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
    }

    #[test]
    fn cpuinfo_must_start_with_a_processor() {
        let mut rows = Vec::new();
        assert!(parse_cpuinfo("vendor_id : x\n", &mut rows).is_err());
        assert!(parse_cpuinfo("processor : x\n", &mut rows).is_err());
        assert_eq!(
            parse_cpuinfo("\nprocessor\t: 3\nmodel\t\t: 2\n", &mut rows),
            Ok(1)
        );
        assert_eq!(rows[0].processor, "3");
        assert_eq!(rows[0].model, "2");
    }
}
