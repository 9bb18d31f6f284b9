//! Filters collectors apply to what they read: node_exporter's device filter (exclude/include
//! flags with their deprecated aliases) and field filters that cache their verdicts.

use regex::Regex;

use super::flags::unanchored_regex_flag;
use super::{BuildContext, BuildError};

/// A field filter (`--collector.{vmstat,netstat}.fields`) that remembers its verdict per field
/// position, so a source whose field names do not change between scrapes runs the regex once
/// per field, not once per field per scrape. No pattern (an empty flag) lets every field through.
pub struct FieldFilter {
    pattern: Option<Regex>,
    verdicts: Vec<(String, bool)>,
    /// Whether the regex ran since the last [`FieldFilter::release_regex_cache`].
    ran: bool,
}

impl FieldFilter {
    pub fn new(pattern: Option<Regex>) -> Self {
        FieldFilter {
            pattern,
            verdicts: Vec::new(),
            ran: false,
        }
    }

    /// Whether `key`, the `index`th field of the source, is to be reported.
    pub fn allows(&mut self, index: usize, key: &str) -> bool {
        let Some(pattern) = &self.pattern else {
            return true;
        };
        if let Some((cached, verdict)) = self.verdicts.get(index)
            && cached == key
        {
            return *verdict;
        }
        let verdict = pattern.is_match(key);
        self.ran = true;
        if self.verdicts.len() <= index {
            self.verdicts
                .resize_with(index + 1, || (String::new(), false));
        }
        if let Some(slot) = self.verdicts.get_mut(index) {
            slot.0.clear();
            slot.0.push_str(key);
            slot.1 = verdict;
        }
        verdict
    }

    /// Call after a scrape: if the regex ran (the first scrape, or fields changed), replaces it
    /// with a fresh copy, dropping the search cache it grew (≈120 KiB for netstat's default
    /// filter) that steady-state scrapes, served from the verdicts, never use.
    pub fn release_regex_cache(&mut self) {
        if std::mem::take(&mut self.ran)
            && let Some(regex) = &mut self.pattern
            && let Ok(fresh) = Regex::new(regex.as_str())
        {
            *regex = fresh;
        }
    }
}

/// node_exporter's `deviceFilter`: a device is ignored when it matches the exclude pattern or
/// fails to match the include pattern.
#[derive(Debug, Default, Clone)]
pub struct DeviceFilter {
    pub exclude: Option<regex::Regex>,
    pub include: Option<regex::Regex>,
}

impl DeviceFilter {
    pub fn ignored(&self, name: &str) -> bool {
        self.exclude.as_ref().is_some_and(|r| r.is_match(name))
            || self.include.as_ref().is_some_and(|r| !r.is_match(name))
    }
}

/// Builds a [`DeviceFilter`] from an exclude flag, an include flag and their deprecated aliases,
/// with node_exporter's rules: an alias only applies when its new flag is not given, and exclude
/// and include are mutually exclusive. `exclude_default` is the exclude flag's default value:
/// giving only the include flag replaces that default (as node_exporter's flag checks require).
pub fn device_filter(
    ctx: &BuildContext<'_>,
    exclude: &str,
    old_exclude: Option<&str>,
    include: &str,
    old_include: Option<&str>,
) -> Result<DeviceFilter, BuildError> {
    let explicit =
        |id: &str| ctx.matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let conflict = |a: &str, b: &str| BuildError::Flag {
        flag: a.to_string(),
        reason: format!("--{a} and --{b} are mutually exclusive"),
    };
    let mut exclude_id = exclude;
    if let Some(old) = old_exclude.filter(|old| ctx.flag(old).is_some_and(|v| !v.is_empty())) {
        if explicit(exclude) {
            return Err(conflict(old, exclude));
        }
        exclude_id = old;
    }
    let mut include_id = include;
    if let Some(old) = old_include.filter(|old| ctx.flag(old).is_some_and(|v| !v.is_empty())) {
        if explicit(include) {
            return Err(conflict(old, include));
        }
        include_id = old;
    }
    let include_re = unanchored_regex_flag(ctx, include_id)?;
    let mut exclude_re = unanchored_regex_flag(ctx, exclude_id)?;
    if include_re.is_some() && exclude_re.is_some() {
        if explicit(exclude_id) {
            return Err(conflict(exclude_id, include_id));
        }
        // Only the default exclude pattern is set: the user asked for an include list.
        exclude_re = None;
    }
    Ok(DeviceFilter {
        exclude: exclude_re,
        include: include_re,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_filter_follows_changed_fields() {
        let mut filter = FieldFilter::new(Some(Regex::new("^pg").unwrap()));
        assert!(filter.allows(0, "pgfault"));
        assert!(!filter.allows(1, "nr_free"));
        assert!(filter.allows(0, "pgfault"));
        assert!(!filter.allows(0, "other"));
        assert!(filter.allows(3, "pgx"));
        // Releasing the regex's search cache keeps the pattern and the verdicts.
        filter.release_regex_cache();
        assert!(filter.allows(4, "pgy"));
        assert!(!filter.allows(1, "nr_free"));
        // No pattern: everything passes.
        assert!(FieldFilter::new(None).allows(0, "anything"));
    }

    #[test]
    fn device_filter_semantics() {
        let f = DeviceFilter {
            exclude: Some(regex::Regex::new("^lo$").unwrap()),
            include: None,
        };
        assert!(f.ignored("lo"));
        assert!(!f.ignored("eth0"));
        let f = DeviceFilter {
            exclude: None,
            include: Some(regex::Regex::new("eth").unwrap()),
        };
        assert!(!f.ignored("veth-eth1"));
        assert!(f.ignored("lo"));
    }
}
