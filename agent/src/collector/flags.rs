//! Command-line flag helpers for collectors, with node_exporter's (kingpin's) semantics:
//! boolean flags with `--x`, `--x=false` and `--no-x`, and unanchored regex flags.

use clap::{Arg, ArgAction, Command};
use regex::Regex;

use super::{BuildContext, BuildError};

/// Adds a kingpin-style boolean flag as node_exporter has them: `--<name>`, `--<name>=false` and
/// `--no-<name>`. Read it with [`bool_flag`].
pub fn add_bool_flag(
    command: Command,
    name: &'static str,
    default: bool,
    help: &'static str,
) -> Command {
    let off = format!("no-{name}");
    command
        .arg(
            Arg::new(name)
                .long(name)
                .num_args(0..=1)
                .require_equals(true)
                .default_value(if default { "true" } else { "false" })
                .default_missing_value("true")
                .value_parser(clap::value_parser!(bool))
                .overrides_with(off.clone())
                .help(help),
        )
        .arg(
            Arg::new(off.clone())
                .long(off)
                .action(ArgAction::SetTrue)
                .overrides_with(name)
                .hide(true),
        )
}

/// The value of a flag added with [`add_bool_flag`]; the last of `--x` / `--no-x` wins.
pub fn bool_flag(ctx: &BuildContext<'_>, name: &str) -> bool {
    bool_flag_in(ctx.matches, name)
}

/// [`bool_flag`] for flags outside a collector's build (the agent's own `--web.*`).
pub fn bool_flag_in(matches: &clap::ArgMatches, name: &str) -> bool {
    let off = format!("no-{name}");
    if matches.try_get_one::<bool>(&off).ok().flatten() == Some(&true) {
        return false;
    }
    matches
        .try_get_one::<bool>(name)
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
}

/// A regex flag matched anywhere in the subject, as node_exporter's `regexp.MatchString` on an
/// unanchored pattern does (its field filters carry their own `^…$` where they want them).
/// Empty means no filter.
pub fn unanchored_regex_flag(
    ctx: &BuildContext<'_>,
    id: &str,
) -> Result<Option<Regex>, BuildError> {
    match ctx.flag(id) {
        None | Some("") => Ok(None),
        Some(pattern) => Regex::new(pattern).map(Some).map_err(|e| BuildError::Flag {
            flag: id.to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(args: &[&str]) -> clap::ArgMatches {
        add_bool_flag(Command::new("t"), "collector.x.on", true, "x")
            .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
    }

    fn value(args: &[&str]) -> bool {
        let m = matches(args);
        let paths = super::super::Paths::default();
        bool_flag(
            &BuildContext {
                matches: &m,
                paths: &paths,
            },
            "collector.x.on",
        )
    }

    #[test]
    fn kingpin_bool_flags() {
        assert!(value(&[]));
        assert!(!value(&["--no-collector.x.on"]));
        assert!(!value(&["--collector.x.on=false"]));
        assert!(value(&["--no-collector.x.on", "--collector.x.on"]));
        assert!(!value(&["--collector.x.on", "--no-collector.x.on"]));
    }
}
