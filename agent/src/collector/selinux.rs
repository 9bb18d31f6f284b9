//! `selinux`: whether SELinux is enabled and, if so, its configured and current enforcement
//! modes.

use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
    no_flags, read_attr,
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

#[derive(Default)]
struct SelinuxCollector {
    buf: String,
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
    /// SELinux is enabled when selinuxfs is mounted and this process's context is not the
    /// kernel's (go-selinux's rule). An unreadable context counts as enabled, as there.
    fn enabled(&mut self, ctx: &Context<'_>) -> bool {
        if !ctx.paths.sys("fs/selinux/enforce").exists() {
            return false;
        }
        match read_attr(&ctx.paths.proc("self/attr/current"), &mut self.buf) {
            Ok(Some(())) => self.buf.trim_end_matches('\0').trim() != "kernel",
            _ => true,
        }
    }
}

impl Collector for SelinuxCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        if !self.enabled(ctx) {
            out.gauge(
                "node_selinux_enabled",
                "SELinux is enabled, 1 is true, 0 is false",
                0.0,
            )?;
            return Ok(());
        }
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
        let current = match read_attr(&ctx.paths.sys("fs/selinux/enforce"), &mut self.buf) {
            Ok(Some(())) => self.buf.trim().parse::<f64>().unwrap_or(DISABLED),
            _ => DISABLED,
        };
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
    use crate::collector::Paths;
    use crate::collector::testing::{assert_golden, fixture, render};

    #[test]
    fn disabled_golden() {
        let root = fixture("basic");
        let text = render(
            "selinux",
            Box::new(SelinuxCollector::default()),
            Paths::fixture(&root),
        );
        assert_golden(&root.join("golden/selinux.prom"), &text);
    }

    #[test]
    fn enabled_golden() {
        let root = fixture("odd");
        let text = render(
            "selinux",
            Box::new(SelinuxCollector::default()),
            Paths::fixture(&root),
        );
        assert_golden(&root.join("golden/selinux.prom"), &text);
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
