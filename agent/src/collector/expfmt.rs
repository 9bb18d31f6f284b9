//! The Prometheus text exposition format, parsed as strictly as node_exporter's
//! `expfmt.TextParser` (prometheus/common) parses the textfile collector's files: metric and
//! label names, escapes, values (Go's float syntax), optional timestamps, `# HELP`/`# TYPE`,
//! histograms and summaries grouped into one metric per label set. Any problem is an error for the
//! whole text. Kept a module of its own rather than a crate: a crate would have to be shown to
//! accept and refuse exactly what expfmt does, and that comparison has not been made.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    Counter,
    Gauge,
    Untyped,
    Histogram,
    Summary,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(f64),
    Histogram {
        sum: f64,
        count: f64,
        /// (upper bound, cumulative count) as written in the file.
        buckets: Vec<(f64, f64)>,
    },
    Summary {
        sum: f64,
        count: f64,
        quantiles: Vec<(f64, f64)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFamily {
    pub name: String,
    pub help: Option<String>,
    pub kind: FamilyType,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Go's ParseFloat as the text format uses it: also `+Inf`, `-Inf`, `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ if s
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            None
        }
        _ => s.parse().ok(),
    }
}

/// Unescapes a HELP text (`\\` and `\n`).
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `{a="b",c="d"}` at the start of `s`; returns the labels and the rest after `}`.
/// Label pairs in file order.
type LabelPairs = Vec<(String, String)>;

fn parse_labels(s: &str) -> Result<(LabelPairs, &str), String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let name = &rest[..name_len];
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        rest = rest[name_len..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label name {name:?}"))?
            .trim_start();
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("expected '\"' for the value of label {name:?}"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {name:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err(format!("invalid escape in value of label {name:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        rest = &rest[end + 1..];
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label name {name:?}"));
        }
        labels.push((name.to_string(), value));
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' in label set".into());
        }
    }
}

struct Parser {
    families: Vec<ParsedFamily>,
    index: HashMap<String, usize>,
    /// Families that had a TYPE line.
    typed: std::collections::HashSet<String>,
}

impl Parser {
    fn family(&mut self, name: &str) -> &mut ParsedFamily {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.families.push(ParsedFamily {
                    name: name.to_string(),
                    help: None,
                    kind: FamilyType::Untyped,
                    metrics: Vec::new(),
                });
                self.index.insert(name.to_string(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// The family a sample named `name` belongs to, and which part of it the sample is.
    fn owner(&self, name: &str) -> (String, Part) {
        for (suffix, part) in [
            ("_bucket", Part::Bucket),
            ("_sum", Part::Sum),
            ("_count", Part::Count),
        ] {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(&i) = self.index.get(base)
            {
                let kind = self.families[i].kind;
                let fits = match part {
                    Part::Bucket => kind == FamilyType::Histogram,
                    _ => matches!(kind, FamilyType::Histogram | FamilyType::Summary),
                };
                if fits {
                    return (base.to_string(), part);
                }
            }
        }
        (name.to_string(), Part::Value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Value,
    Bucket,
    Sum,
    Count,
}

/// Parses a whole file of the Prometheus text format (0.0.4).
pub fn parse_text(text: &str) -> Result<Vec<ParsedFamily>, ParseError> {
    let mut p = Parser {
        families: Vec::new(),
        index: HashMap::new(),
        typed: Default::default(),
    };
    for (number, line) in text.lines().enumerate() {
        let err = |reason: String| ParseError {
            line: number + 1,
            reason,
        };
        let line = line.trim_start();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            let (keyword, rest) = comment.split_once([' ', '\t']).unwrap_or((comment, ""));
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let rest = rest.trim_start();
            let (name, arg) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            if !valid_metric_name(name) {
                return Err(err(format!(
                    "invalid metric name {name:?} in {keyword} line"
                )));
            }
            let family = p.family(name);
            if keyword == "HELP" {
                if family.help.is_some() {
                    return Err(err(format!("second HELP line for metric name {name:?}")));
                }
                family.help = Some(unescape_help(arg));
            } else {
                if !p.typed.insert(name.to_string()) {
                    return Err(err(format!("second TYPE line for metric name {name:?}")));
                }
                let family = p.family(name);
                if !family.metrics.is_empty() {
                    return Err(err(format!(
                        "TYPE line for metric name {name:?} must be before any samples"
                    )));
                }
                family.kind = match arg.trim() {
                    "counter" => FamilyType::Counter,
                    "gauge" => FamilyType::Gauge,
                    "untyped" => FamilyType::Untyped,
                    "histogram" => FamilyType::Histogram,
                    "summary" => FamilyType::Summary,
                    other => return Err(err(format!("unknown metric type {other:?}"))),
                };
            }
            continue;
        }
        // A sample: name, optional labels, value, optional timestamp.
        let name_len = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let sample_name = &line[..name_len];
        if !valid_metric_name(sample_name) {
            return Err(err(format!("invalid metric name in line {line:?}")));
        }
        let mut rest = line[name_len..].trim_start();
        let mut labels = Vec::new();
        if rest.starts_with('{') {
            let (parsed, after) = parse_labels(rest).map_err(err)?;
            labels = parsed;
            rest = after;
        }
        let mut fields = rest.split_ascii_whitespace();
        let value_text = fields
            .next()
            .ok_or_else(|| err(format!("missing value in line {line:?}")))?;
        let value =
            parse_value(value_text).ok_or_else(|| err(format!("invalid value {value_text:?}")))?;
        if let Some(ts) = fields.next() {
            if ts.parse::<i64>().is_err() {
                return Err(err(format!("invalid timestamp {ts:?}")));
            }
            return Err(err(
                "contains unsupported client-side timestamps, skipping entire file".into(),
            ));
        }
        if fields.next().is_some() {
            return Err(err(format!("unexpected text after value in line {line:?}")));
        }
        let (owner, part) = p.owner(sample_name);
        let family = p.family(&owner);
        add_sample(family, part, labels, value).map_err(err)?;
    }
    Ok(p.families)
}

fn add_sample(
    family: &mut ParsedFamily,
    part: Part,
    mut labels: Vec<(String, String)>,
    value: f64,
) -> Result<(), String> {
    match family.kind {
        FamilyType::Counter | FamilyType::Gauge | FamilyType::Untyped => {
            if family
                .metrics
                .iter()
                .any(|m| same_labels(&m.labels, &labels))
            {
                return Err(format!(
                    "duplicate sample for metric {:?} with labels {labels:?}",
                    family.name
                ));
            }
            family.metrics.push(Metric {
                labels,
                value: Value::Simple(value),
            });
        }
        FamilyType::Histogram | FamilyType::Summary => {
            let histogram = family.kind == FamilyType::Histogram;
            let mut bound = None;
            let special = if histogram { "le" } else { "quantile" };
            // expfmt never keeps `le` (histograms) or `quantile` (summaries) as a label, on
            // any sample of the family: on `_sum`/`_count` its value is checked and dropped.
            let special_value = match labels.iter().position(|(n, _)| n == special) {
                Some(position) => {
                    let (_, text) = labels.remove(position);
                    Some(
                        parse_value(&text)
                            .ok_or_else(|| format!("invalid {special} value {text:?}"))?,
                    )
                }
                None => None,
            };
            if part == Part::Bucket || (!histogram && part == Part::Value) {
                bound =
                    Some(special_value.ok_or_else(|| {
                        format!("missing label {special:?} in {:?}", family.name)
                    })?);
            } else if part == Part::Value {
                return Err(format!(
                    "sample without suffix in histogram {:?}",
                    family.name
                ));
            }
            let metric = match family
                .metrics
                .iter_mut()
                .position(|m| same_labels(&m.labels, &labels))
            {
                Some(i) => &mut family.metrics[i],
                None => {
                    family.metrics.push(Metric {
                        labels,
                        value: if histogram {
                            Value::Histogram {
                                sum: 0.0,
                                count: 0.0,
                                buckets: Vec::new(),
                            }
                        } else {
                            Value::Summary {
                                sum: 0.0,
                                count: 0.0,
                                quantiles: Vec::new(),
                            }
                        },
                    });
                    let last = family.metrics.len() - 1;
                    &mut family.metrics[last]
                }
            };
            match (&mut metric.value, part, bound) {
                (Value::Histogram { sum, .. } | Value::Summary { sum, .. }, Part::Sum, _) => {
                    *sum = value
                }
                (Value::Histogram { count, .. } | Value::Summary { count, .. }, Part::Count, _) => {
                    *count = value
                }
                (Value::Histogram { buckets, .. }, Part::Bucket, Some(b)) => {
                    buckets.push((b, value))
                }
                (Value::Summary { quantiles, .. }, Part::Value, Some(q)) => {
                    quantiles.push((q, value))
                }
                _ => return Err(format!("unexpected sample in {:?}", family.name)),
            }
        }
    }
    Ok(())
}

/// Whether two label sets are equal, whatever their order.
pub fn same_labels(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().all(|pair| b.contains(pair))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_accepts_the_format() {
        let families = parse_text(
            "# HELP a_total Things \\\\ done\\n.\n# TYPE a_total counter\n\
             a_total{x=\"1\",y=\"q\\\"uote\"} 3\na_total 4e3\n\
             # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n\
             # random comment\nplain{a=\"b\",} NaN\n",
        )
        .unwrap();
        assert_eq!(families.len(), 3);
        assert_eq!(families[0].help.as_deref(), Some("Things \\ done\n."));
        assert_eq!(families[0].metrics[0].labels[1].1, "q\"uote");
        assert_eq!(families[0].metrics[1].value, Value::Simple(4000.0));
        assert_eq!(
            families[1].metrics[0].value,
            Value::Histogram {
                sum: 1.5,
                count: 2.0,
                buckets: vec![(0.5, 1.0), (f64::INFINITY, 2.0)]
            }
        );
        assert_eq!(families[2].name, "plain");
    }

    #[test]
    fn parser_rejects_bad_input() {
        for bad in [
            "metric 1 1700000000000\n",
            "metric{a=\"1\" 1\n",
            "metric{a=\"1\",a=\"2\"} 1\n",
            "metric one\n",
            "1metric 1\n",
            "# TYPE m counter\n# TYPE m gauge\n",
            "m 1\n# TYPE m counter\n",
            "# TYPE m sparkline\n",
            "# HELP m a\n# HELP m b\n",
            "m 1\nm 2\n",
            "m{__reserved=\"x\"} 1\n",
            "# TYPE h histogram\nh_bucket 1\n",
            "m{a=\"\\x\"} 1\n",
            "m 1 2 3\n",
        ] {
            assert!(parse_text(bad).is_err(), "accepted {bad:?}");
        }
    }
}
