//! `netstat`: the protocol counters of /proc/net/netstat, /proc/net/snmp and /proc/net/snmp6
//! matching `--collector.netstat.fields`, as untyped node_netstat_<Protocol>_<Counter>.

use std::ops::Range;
use std::path::Path;

use super::filter::FieldFilter;
use super::flags::unanchored_regex_flag;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "netstat",
    default_enabled: true,
    flags,
    build,
};

const FIELDS_FLAG: &str = "collector.netstat.fields";
const DEFAULT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue|TCPRcvQDrop)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

fn flags(command: clap::Command) -> clap::Command {
    command.arg(
        clap::Arg::new(FIELDS_FLAG)
            .long(FIELDS_FLAG)
            .default_value(DEFAULT_FIELDS)
            .help("Regexp of fields to return for netstat collector."),
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(NetstatCollector {
        fields: FieldFilter::new(unanchored_regex_flag(ctx, FIELDS_FLAG)?),
        netstat_source: SourceFile::proc("net/netstat"),
        snmp_source: SourceFile::proc("net/snmp"),
        snmp6_source: SourceFile::proc("net/snmp6"),
        netstat: String::new(),
        snmp: String::new(),
        snmp6: String::new(),
        protocols: Vec::new(),
        key: String::new(),
        name: String::new(),
        help: String::new(),
    }))
}

struct NetstatCollector {
    fields: FieldFilter,
    netstat: String,
    snmp: String,
    snmp6: String,
    netstat_source: SourceFile,
    snmp_source: SourceFile,
    snmp6_source: SourceFile,
    /// Protocols already exported this scrape (file index, byte range in that file's buffer):
    /// a repeated protocol would repeat families, which the text format forbids.
    protocols: Vec<(usize, Range<usize>)>,
    key: String,
    name: String,
    help: String,
}

/// One `Proto: Name Name…` / `Proto: value value…` pair of lines: the protocol and its
/// (name, value) pairs, or `None` when the two lines do not belong together.
pub fn parse_pair<'a>(
    names: &'a str,
    values: &'a str,
) -> Option<(&'a str, impl Iterator<Item = (&'a str, &'a str)>)> {
    let mut names = names.split_ascii_whitespace();
    let mut values = values.split_ascii_whitespace();
    let protocol = names.next()?.strip_suffix(':')?;
    if values.next()?.strip_suffix(':')? != protocol
        || names.clone().count() != values.clone().count()
    {
        return None;
    }
    Some((protocol, names.zip(values)))
}

/// One snmp6 line `Icmp6InMsgs 1`: protocol (up to and including the first `6`), counter name
/// and value. Lines without a `6` in the name are not counters.
pub fn parse_snmp6_line(line: &str) -> Option<(&str, &str, &str)> {
    let mut fields = line.split_ascii_whitespace();
    let key = fields.next()?;
    let value = fields.next()?;
    let six = key.find('6')?;
    Some((&key[..=six], &key[six + 1..], value))
}

struct Emitter<'s, 'w, 'a, 'e> {
    fields: &'s mut FieldFilter,
    index: usize,
    key: &'s mut String,
    name: &'s mut String,
    help: &'s mut String,
    out: &'w mut MetricWriter<'a, 'e>,
}

impl Emitter<'_, '_, '_, '_> {
    fn emit(
        &mut self,
        ctx: &Context<'_>,
        path: &Path,
        protocol: &str,
        counter: &str,
        value: &str,
    ) -> Result<(), CollectorError> {
        self.key.clear();
        self.key.push_str(protocol);
        self.key.push('_');
        self.key.push_str(counter);
        let index = self.index;
        self.index += 1;
        if !self.fields.allows(index, self.key) {
            return Ok(());
        }
        let Ok(value) = value.parse::<f64>() else {
            ctx.malformed(path, self.key);
            return Ok(());
        };
        self.name.clear();
        self.name.push_str("node_netstat_");
        self.name.push_str(self.key);
        self.help.clear();
        self.help.push_str("Statistic ");
        self.help.push_str(protocol);
        self.help.push_str(counter);
        self.help.push('.');
        self.out
            .single(self.name, self.help, Kind::Untyped, &[], value)?;
        Ok(())
    }
}

impl Collector for NetstatCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.netstat_source
            .read_into(ctx.paths, &mut self.netstat)?;
        self.snmp_source.read_into(ctx.paths, &mut self.snmp)?;
        match self.snmp6_source.read_into(ctx.paths, &mut self.snmp6) {
            Ok(()) => {}
            // IPv6 disabled.
            Err(CollectorError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.snmp6.clear()
            }
            Err(e) => return Err(e),
        }
        let mut emitter = Emitter {
            fields: &mut self.fields,
            index: 0,
            key: &mut self.key,
            name: &mut self.name,
            help: &mut self.help,
            out,
        };
        self.protocols.clear();
        let files = [
            (&self.netstat, self.netstat_source.display_path()),
            (&self.snmp, self.snmp_source.display_path()),
        ];
        let snmp6_path = self.snmp6_source.display_path();
        for (file_index, (text, path)) in files.iter().enumerate() {
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            while let Some(names) = lines.next() {
                let Some(values) = lines.next() else {
                    ctx.malformed(path, names);
                    break;
                };
                let Some((protocol, pairs)) = parse_pair(names, values) else {
                    ctx.malformed(path, names);
                    continue;
                };
                let seen = self.protocols.iter().any(|(f, range)| {
                    files.get(*f).and_then(|(t, _)| t.get(range.clone())) == Some(protocol)
                });
                if seen {
                    ctx.malformed(path, names);
                    continue;
                }
                let start = protocol.as_ptr() as usize - text.as_ptr() as usize;
                self.protocols
                    .push((file_index, start..start + protocol.len()));
                for (counter, value) in pairs {
                    emitter.emit(ctx, path, protocol, counter, value)?;
                }
            }
        }
        for line in self.snmp6.lines() {
            if line.trim().is_empty() {
                continue;
            }
            match parse_snmp6_line(line) {
                Some((protocol, counter, value)) => {
                    emitter.emit(ctx, snmp6_path, protocol, counter, value)?
                }
                None => ctx.malformed(snmp6_path, line),
            }
        }
        self.fields.release_regex_cache();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, build_with, fixture, render};

    #[test]
    fn golden_default_fields() {
        assert_renders_golden("basic", "netstat", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn odd_files_without_ipv6() {
        assert_renders_golden("odd", "netstat", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn every_field_with_an_empty_filter() {
        let root = fixture("basic");
        let paths = Paths::fixture(&root);
        let collector = build_with(&REGISTRATION, &["--collector.netstat.fields="], &paths);
        let text = render("netstat", collector, paths);
        assert!(text.contains("\nnode_netstat_TcpExt_SyncookiesSent "));
        assert!(text.contains("\nnode_netstat_Ip_DefaultTTL "));
        assert!(text.contains("\nnode_netstat_Icmp6_InDestUnreachs "));
    }

    #[test]
    fn pairs_and_snmp6() {
        let (protocol, pairs) = parse_pair("Tcp: A B", "Tcp: 1 -1").unwrap();
        assert_eq!(protocol, "Tcp");
        assert_eq!(pairs.collect::<Vec<_>>(), [("A", "1"), ("B", "-1")]);
        assert!(parse_pair("Tcp: A B", "Tcp: 1").is_none());
        assert!(parse_pair("Tcp: A", "Udp: 1").is_none());
        assert_eq!(
            parse_snmp6_line("UdpLite6InErrors   3"),
            Some(("UdpLite6", "InErrors", "3"))
        );
        assert_eq!(parse_snmp6_line("Icmp6InMsgs"), None);
        assert_eq!(parse_snmp6_line("IpInMsgs 1"), None);
    }
}
