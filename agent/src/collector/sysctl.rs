//! `sysctl`: the sysctls named by `--collector.sysctl.include` (numbers) and
//! `--collector.sysctl.include-info` (strings), read from /proc/sys as node_exporter 1.12.1 reads
//! them through prometheus/procfs: one ≤128-byte read, trimmed, split on white space; numbers
//! parse as Go's `ParseInt(s, 0, 64)`.
//!
//! A numeric sysctl with one value is `node_sysctl_<name>` (untyped, the name sanitized), with
//! several `node_sysctl_<name>{index="i"}`, or with `name:key1,key2` one
//! `node_sysctl_<name>_<key>` per value (the counts must match). A string sysctl is
//! `node_sysctl_info{index,name,value}` per word; keys are refused for those. As in 1.12.1,
//! the first sysctl that cannot be read or does not fit fails the collection, after the ones
//! before it were reported. Families are written in name order and samples in label order, as
//! client_golang's gathering sorts them. Cost: each sysctl's file kept open, one pread each.

use clap::{Arg, ArgAction};

use super::gosyntax::parse_go_int;
use super::rapl::sanitize;
use super::source::OpenAttr;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "sysctl",
    default_enabled: false,
    flags,
    build,
};

const INCLUDE: &str = "collector.sysctl.include";
const INCLUDE_INFO: &str = "collector.sysctl.include-info";

fn flags(command: clap::Command) -> clap::Command {
    command
        .arg(
            Arg::new(INCLUDE)
                .long(INCLUDE)
                .action(ArgAction::Append)
                .help("Select sysctl metrics to include"),
        )
        .arg(
            Arg::new(INCLUDE_INFO)
                .long(INCLUDE_INFO)
                .action(ArgAction::Append)
                .help("Select sysctl metrics to include as info metrics"),
        )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let values = |id: &str| -> Vec<String> {
        ctx.matches
            .try_get_many::<String>(id)
            .ok()
            .flatten()
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    };
    let mut sysctls: Vec<Sysctl> = values(INCLUDE)
        .iter()
        .map(|s| Sysctl::new(s, true, ctx))
        .collect();
    sysctls.extend(
        values(INCLUDE_INFO)
            .iter()
            .map(|s| Sysctl::new(s, false, ctx)),
    );
    Ok(Box::new(SysctlCollector {
        sysctls,
        buf: String::new(),
    }))
}

/// node_exporter's `sysctl`: one flag value.
struct Sysctl {
    numeric: bool,
    name: String,
    keys: Vec<String>,
    /// `node_sysctl_<sanitized name>` and the help of its plain and indexed forms.
    metric: String,
    help: String,
    path: std::path::PathBuf,
    file: OpenAttr,
}

impl Sysctl {
    fn new(include: &str, numeric: bool, ctx: &BuildContext<'_>) -> Self {
        let (name, keys) = match include.split_once(':') {
            Some((name, keys)) => (name, keys.split(',').map(str::to_string).collect()),
            None => (include, Vec::new()),
        };
        Sysctl {
            numeric,
            name: name.to_string(),
            keys,
            metric: format!("node_sysctl_{}", sanitize(name)),
            help: format!("sysctl {name}"),
            path: ctx.paths.proc("sys").join(name.replace('.', "/")),
            file: OpenAttr::default(),
        }
    }
}

/// One sample to write.
struct Sample {
    metric: String,
    help: String,
    kind: Kind,
    /// `(index, name, value)` for info samples, `(index, "", "")` for indexed numbers.
    labels: Option<(String, String, String)>,
    value: f64,
}

struct SysctlCollector {
    sysctls: Vec<Sysctl>,
    buf: String,
}

/// Reads one sysctl's samples into `samples`.
fn collect(
    s: &mut Sysctl,
    buf: &mut String,
    samples: &mut Vec<Sample>,
) -> Result<(), CollectorError> {
    s.file
        .read(&s.path, buf)
        .map_err(|e| CollectorError::io(&s.path, e))?;
    let fields: Vec<&str> = buf.split_whitespace().collect();
    let fail = |reason: String| CollectorError::Parse {
        path: s.path.clone(),
        reason,
    };
    let mut numbers = Vec::new();
    if s.numeric {
        for (i, field) in fields.iter().enumerate() {
            numbers.push(
                parse_go_int(field).ok_or_else(|| {
                    fail(format!("field {i} in sysctl {} is not a valid int", s.name))
                })? as f64,
            );
        }
    }
    let info = |index: usize, value: &str| Sample {
        metric: "node_sysctl_info".to_string(),
        help: "sysctl info".to_string(),
        kind: Kind::Gauge,
        labels: Some((index.to_string(), s.name.clone(), value.to_string())),
        value: 1.0,
    };
    match fields.len() {
        0 => return Err(fail(format!("sysctl {} has no values", s.name))),
        1 if !s.keys.is_empty() => {
            return Err(fail(format!(
                "sysctl {} has only one value, but expected {:?}",
                s.name, s.keys
            )));
        }
        1 if s.numeric => samples.push(Sample {
            metric: s.metric.clone(),
            help: s.help.clone(),
            kind: Kind::Untyped,
            labels: None,
            value: numbers[0],
        }),
        1 => samples.push(info(0, fields[0])),
        _ if s.keys.is_empty() => {
            for (i, field) in fields.iter().enumerate() {
                samples.push(if s.numeric {
                    Sample {
                        metric: s.metric.clone(),
                        help: s.help.clone(),
                        kind: Kind::Untyped,
                        labels: Some((i.to_string(), String::new(), String::new())),
                        value: numbers[i],
                    }
                } else {
                    info(i, field)
                });
            }
        }
        n if n != s.keys.len() => {
            return Err(fail(format!(
                "sysctl {} has {n} keys but only {} defined in f lag",
                s.name,
                s.keys.len()
            )));
        }
        _ if !s.numeric => {
            return Err(fail("mapped sysctl string values not supported".into()));
        }
        _ => {
            for (i, key) in s.keys.iter().enumerate() {
                let metric = format!("{}_{key}", s.metric);
                if !metric
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
                {
                    return Err(fail(format!("{metric:?} is not a valid metric name")));
                }
                samples.push(Sample {
                    metric,
                    help: format!("sysctl {}, field {i}", s.name),
                    kind: Kind::Untyped,
                    labels: None,
                    value: numbers[i],
                });
            }
        }
    }
    Ok(())
}

fn write(samples: &mut [Sample], out: &mut MetricWriter<'_, '_>) -> Result<(), CollectorError> {
    // Stable: a repeated family keeps its first help.
    samples.sort_by(|a, b| (&a.metric, &a.labels).cmp(&(&b.metric, &b.labels)));
    let mut i = 0;
    while i < samples.len() {
        let first = &samples[i];
        let mut f = out.family(&first.metric, &first.help, first.kind)?;
        let mut previous: Option<&Option<(String, String, String)>> = None;
        while i < samples.len() && samples[i].metric == first.metric {
            let s = &samples[i];
            i += 1;
            // A repeated series (a sysctl given twice): client_golang drops the repeat.
            if previous == Some(&s.labels) {
                continue;
            }
            previous = Some(&s.labels);
            match &s.labels {
                None => f.sample(&[], s.value)?,
                Some((index, name, value)) if s.kind == Kind::Gauge => f.sample(
                    &[("index", index), ("name", name), ("value", value)],
                    s.value,
                )?,
                Some((index, ..)) => f.sample(&[("index", index)], s.value)?,
            }
        }
    }
    Ok(())
}

impl Collector for SysctlCollector {
    fn update(
        &mut self,
        _: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let mut samples = Vec::new();
        let mut failure = None;
        for s in &mut self.sysctls {
            if let Err(e) = collect(s, &mut self.buf, &mut samples) {
                failure = Some(e);
                break;
            }
        }
        write(&mut samples, out)?;
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_golden, build_with, fixture, render};

    fn render_with(args: &[&str]) -> String {
        let root = fixture("hw-system");
        let paths = Paths::fixture(&root);
        let collector = build_with(&REGISTRATION, args, &paths);
        render("sysctl", collector, paths)
    }

    #[test]
    fn golden() {
        let text = render_with(&[
            "--collector.sysctl.include=vm.swappiness",
            "--collector.sysctl.include=fs.file-nr",
            "--collector.sysctl.include=kernel.printk",
            "--collector.sysctl.include=net.ipv4.ip_local_port_range:lower,upper",
            "--collector.sysctl.include-info=kernel.core_pattern",
            "--collector.sysctl.include-info=net.ipv4.tcp_congestion_control",
        ]);
        assert_golden(&fixture("hw-system").join("golden/sysctl.prom"), &text);
    }

    fn failed(text: &str) -> bool {
        text.contains("node_scrape_collector_success{collector=\"sysctl\"} 0")
    }

    #[test]
    fn mismatches_fail_after_earlier_sysctls() {
        let text = render_with(&[
            "--collector.sysctl.include=vm.swappiness",
            "--collector.sysctl.include=kernel.printk:a,b",
        ]);
        assert!(failed(&text));
        assert!(text.contains("node_sysctl_vm_swappiness 60\n"));
        assert!(failed(&render_with(&[
            "--collector.sysctl.include=vm.swappiness:a"
        ])));
        assert!(failed(&render_with(&[
            "--collector.sysctl.include=kernel.core_pattern"
        ])));
        assert!(failed(&render_with(&[
            "--collector.sysctl.include=vm.nonexistent"
        ])));
        assert!(failed(&render_with(&[
            "--collector.sysctl.include-info=net.ipv4.ip_local_port_range:a,b"
        ])));
        let text = render_with(&[]);
        assert!(!failed(&text));
    }
}
