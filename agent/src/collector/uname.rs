//! `uname`: node_uname_info, labelled with uname(2)'s fields.

use std::ffi::CStr;

use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "uname",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(UnameCollector::default()))
}

/// sysname, release, version, machine, nodename, domainname; reused across scrapes.
#[derive(Default)]
struct UnameCollector {
    fields: [String; 6],
}

fn copy_field(dst: &mut String, src: &[libc::c_char]) {
    dst.clear();
    // SAFETY: reinterpreting c_char as u8 of the same length; the kernel NUL-terminates fields.
    let bytes = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), src.len()) };
    if let Ok(s) = CStr::from_bytes_until_nul(bytes) {
        dst.push_str(&s.to_string_lossy());
    }
}

impl Collector for UnameCollector {
    fn update(
        &mut self,
        _: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        // SAFETY: uname fills the zeroed struct we own.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } != 0 {
            return Err(CollectorError::io(
                "uname(2)",
                std::io::Error::last_os_error(),
            ));
        }
        let [sysname, release, version, machine, nodename, domainname] = &mut self.fields;
        copy_field(sysname, &u.sysname);
        copy_field(release, &u.release);
        copy_field(version, &u.version);
        copy_field(machine, &u.machine);
        copy_field(nodename, &u.nodename);
        copy_field(domainname, &u.domainname);
        out.single(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            Kind::Gauge,
            &[
                ("sysname", sysname),
                ("release", release),
                ("version", version),
                ("machine", machine),
                ("nodename", nodename),
                ("domainname", domainname),
            ],
            1.0,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::render;

    #[test]
    fn reports_this_kernel() {
        let text = render(
            "uname",
            Box::new(UnameCollector::default()),
            Paths::default(),
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("node_uname_info{"))
            .unwrap();
        assert!(line.contains("sysname=\"Linux\""), "{line}");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert!(
            line.contains(&format!("release=\"{}\"", release.trim())),
            "{line}"
        );
        assert!(line.ends_with(" 1"));
    }
}
