//! `sockstat`: socket counts per protocol and state from /proc/net/sockstat and sockstat6, as
//! node_sockstat_<PROTOCOL>_<state> (plus `_mem_bytes` for page counts).

use std::path::Path;

use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "sockstat",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(Box::new(SockstatCollector::new(
        u64::try_from(page_size).unwrap_or(4096),
    )))
}

struct SockstatCollector {
    /// /proc/net/sockstat and sockstat6.
    sources: [SourceFile; 2],
    state: SockstatState,
}

struct SockstatState {
    page_size: u64,
    buf: String,
    name: String,
    help: String,
}

/// The states node_exporter exports, in its order; `inuse` is always exported (0 when absent).
const STATES: [&str; 6] = ["inuse", "orphan", "tw", "alloc", "mem", "memory"];

/// One parsed line: the protocol, and the values of [`STATES`] it has.
#[derive(Debug, PartialEq)]
pub enum SockstatLine<'a> {
    Used(i64),
    Protocol(&'a str, [Option<i64>; 6]),
}

/// Parses `PROTO: key value key value…`.
pub fn parse_sockstat_line(line: &str) -> Option<SockstatLine<'_>> {
    let mut fields = line.split_ascii_whitespace();
    let protocol = fields.next()?.strip_suffix(':')?;
    let mut values = [None; 6];
    let mut used = None;
    let mut any = false;
    while let Some(key) = fields.next() {
        let value: i64 = fields.next()?.parse().ok()?;
        any = true;
        if protocol == "sockets" && key == "used" {
            used = Some(value);
        } else if let Some(i) = STATES.iter().position(|s| *s == key) {
            values[i] = Some(value);
        }
    }
    if !any {
        return None;
    }
    if protocol == "sockets" {
        return Some(SockstatLine::Used(used.unwrap_or(0)));
    }
    Some(SockstatLine::Protocol(protocol, values))
}

impl SockstatCollector {
    fn new(page_size: u64) -> Self {
        SockstatCollector {
            sources: [
                SourceFile::proc("net/sockstat"),
                SourceFile::proc("net/sockstat6"),
            ],
            state: SockstatState {
                page_size,
                buf: String::new(),
                name: String::new(),
                help: String::new(),
            },
        }
    }
}

impl SockstatState {
    fn emit(
        &mut self,
        ctx: &Context<'_>,
        path: &Path,
        ipv6: bool,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        for line in self.buf.lines() {
            if line.trim().is_empty() {
                continue;
            }
            match parse_sockstat_line(line) {
                None => ctx.malformed(path, line),
                Some(SockstatLine::Used(used)) => {
                    // sockstat6 has no such line; were it to, node_exporter would not export it.
                    if !ipv6 {
                        out.gauge(
                            "node_sockstat_sockets_used",
                            "Number of IPv4 sockets in use.",
                            used as f64,
                        )?;
                    }
                }
                Some(SockstatLine::Protocol(protocol, mut values)) => {
                    values[0] = values[0].or(Some(0));
                    let mem_bytes =
                        values[4].map(|pages| pages.saturating_mul(self.page_size as i64));
                    let states = STATES.iter().zip(values).chain([(&"mem_bytes", mem_bytes)]);
                    for (state, value) in states {
                        let Some(value) = value else { continue };
                        self.name.clear();
                        self.name.push_str("node_sockstat_");
                        self.name.push_str(protocol);
                        self.name.push('_');
                        self.name.push_str(state);
                        self.help.clear();
                        self.help.push_str("Number of ");
                        self.help.push_str(protocol);
                        self.help.push_str(" sockets in state ");
                        self.help.push_str(state);
                        self.help.push('.');
                        out.gauge(&self.name, &self.help, value as f64)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Collector for SockstatCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        for (source, ipv6) in self.sources.iter_mut().zip([false, true]) {
            match source.read_into(ctx.paths, &mut self.state.buf) {
                Ok(()) => self.state.emit(ctx, source.display_path(), ipv6, out)?,
                // IPv4 or IPv6 disabled in this kernel.
                Err(CollectorError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("basic", "sockstat", |_| {
            Box::new(SockstatCollector::new(4096))
        });
    }

    #[test]
    fn without_ipv6_and_with_odd_lines() {
        assert_renders_golden("odd", "sockstat", |_| {
            Box::new(SockstatCollector::new(65536))
        });
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_sockstat_line("sockets: used 15"),
            Some(SockstatLine::Used(15))
        );
        assert_eq!(
            parse_sockstat_line("FRAG: inuse 0 memory 7"),
            Some(SockstatLine::Protocol(
                "FRAG",
                [Some(0), None, None, None, None, Some(7)]
            ))
        );
        assert_eq!(parse_sockstat_line("TCP: inuse"), None);
        assert_eq!(parse_sockstat_line("TCP inuse 1"), None);
        assert_eq!(parse_sockstat_line("TCP: inuse x"), None);
    }
}
