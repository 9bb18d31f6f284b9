//! `selinux`: whether SELinux is enabled and, if so, its configured and current enforcement
//! modes.

use super::source::SourceFile;
use super::source::read_attr;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "selinux",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(SelinuxCollector::default()))
}

struct SelinuxCollector {
    /// selinuxfs's `enforce`: present only when selinuxfs is mounted.
    enforce: SourceFile,
    /// This process's security context.
    context: SourceFile,
    buf: String,
    /// `enforce` is absent while selinuxfs is not mounted (SELinux off, most hosts).
    absence: super::source::Absence,
}

impl Default for SelinuxCollector {
    fn default() -> Self {
        SelinuxCollector {
            enforce: SourceFile::sys("fs/selinux/enforce"),
            context: SourceFile::proc("self/attr/current"),
            buf: String::new(),
            absence: Default::default(),
        }
    }
}

/// Enforcement modes as go-selinux numbers them.
const ENFORCING: f64 = 1.0;
const PERMISSIVE: f64 = 0.0;
const DISABLED: f64 = -1.0;

/// The `SELINUX=` mode of /etc/selinux/config.
pub fn config_mode(config: &str) -> f64 {
    let mode = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("SELINUX="));
    match mode.map(|m| m.trim().trim_matches('"')) {
        Some("enforcing") => ENFORCING,
        Some("permissive") => PERMISSIVE,
        _ => DISABLED,
    }
}

impl SelinuxCollector {
    /// The current enforcement mode when SELinux is enabled: selinuxfs is mounted and this
    /// process's context is not the kernel's (go-selinux's rule; an unreadable context counts
    /// as enabled, as there). An unreadable mode reads as disabled (-1), as there.
    fn enabled(&mut self, ctx: &Context<'_>) -> Option<f64> {
        let (enforce, buf) = (&mut self.enforce, &mut self.buf);
        let mode = match self.absence.read(ctx, || enforce.read_into(ctx.paths, buf)) {
            Ok(true) => self.buf.trim().parse::<f64>().unwrap_or(DISABLED),
            Ok(false) => return None,
            Err(_) => DISABLED,
        };
        match self.context.read_into(ctx.paths, &mut self.buf) {
            Ok(()) if self.buf.trim_end_matches('\0').trim() == "kernel" => None,
            _ => Some(mode),
        }
    }
}

impl Collector for SelinuxCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let Some(current) = self.enabled(ctx) else {
            out.gauge(
                "node_selinux_enabled",
                "SELinux is enabled, 1 is true, 0 is false",
                0.0,
            )?;
            return Ok(());
        };
        out.gauge(
            "node_selinux_enabled",
            "SELinux is enabled, 1 is true, 0 is false",
            1.0,
        )?;
        let configured = match read_attr(&ctx.paths.root("/etc/selinux/config"), &mut self.buf) {
            Ok(Some(())) => config_mode(&self.buf),
            _ => DISABLED,
        };
        out.gauge(
            "node_selinux_config_mode",
            "Configured SELinux enforcement mode",
            configured,
        )?;
        out.gauge(
            "node_selinux_current_mode",
            "Current SELinux enforcement mode",
            current,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn disabled_golden() {
        assert_renders_golden(
            "basic",
            "selinux",
            |_| Box::new(SelinuxCollector::default()),
        );
    }

    #[test]
    fn enabled_golden() {
        assert_renders_golden("odd", "selinux", |_| Box::new(SelinuxCollector::default()));
    }

    #[test]
    fn config_modes() {
        assert_eq!(
            config_mode("# x\nSELINUX=enforcing\nSELINUXTYPE=targeted\n"),
            ENFORCING
        );
        assert_eq!(config_mode("SELINUX=permissive\n"), PERMISSIVE);
        assert_eq!(config_mode("SELINUX=disabled\n"), DISABLED);
        assert_eq!(config_mode(""), DISABLED);
    }
}
