//! sysfs attributes read as prometheus/procfs reads them: one short read, trimmed; and
//! [`OpenAttr`], an attribute found at run time and kept open between scrapes.

use std::io::Read;
use std::path::Path;

/// procfs's `SysReadFile`: one read of at most 128 bytes (some hwmon drivers never finish a
/// longer read), whitespace-trimmed, into `buf`.
pub fn read_sys_file(path: &Path, buf: &mut String) -> std::io::Result<()> {
    let mut bytes = [0u8; 128];
    let n = std::fs::File::open(path)?.read(&mut bytes)?;
    buf.clear();
    buf.push_str(String::from_utf8_lossy(&bytes[..n]).trim());
    Ok(())
}

/// A sysfs attribute whose path is known only at run time (one interface's `speed`), kept
/// open between scrapes and re-read from offset 0 as [`SourceFile`] does: for attributes read
/// every scrape, the path walk and open/close cost more than generating the value. Reads as
/// [`read_sys_file`] does.
#[derive(Default)]
pub struct OpenAttr {
    file: Option<std::fs::File>,
}

impl OpenAttr {
    pub fn read(&mut self, path: &Path, buf: &mut String) -> std::io::Result<()> {
        if let Some(file) = &self.file {
            match read_sys_at(file, buf) {
                // The attribute's kernfs node is gone (the device was removed, perhaps replaced
                // by another of the same name): open the path again.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => self.file = None,
                result => return result,
            }
        }
        let file = std::fs::File::open(path)?;
        let result = read_sys_at(&file, buf);
        // Kept even when the driver refuses the read now (the speed of a link that is down):
        // it may answer at the next scrape.
        self.file = Some(file);
        result
    }

    /// Like [`read_sys_attr`].
    pub fn read_attr(&mut self, path: &Path, buf: &mut String) -> std::io::Result<bool> {
        match self.read(path, buf) {
            Ok(()) => Ok(true),
            Err(e) if sys_attr_absent(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn read_sys_at(file: &std::fs::File, buf: &mut String) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; 128];
    let n = file.read_at(&mut bytes, 0)?;
    buf.clear();
    buf.push_str(String::from_utf8_lossy(bytes.get(..n).unwrap_or_default()).trim());
    Ok(())
}

/// Like [`read_sys_file`], but `Ok(false)` for the errors procfs treats as "attribute absent":
/// not found, permission denied, operation not supported, invalid argument (e.g. the speed of a
/// link that is down) and, for sysfs attributes backed by drivers, no such device.
pub fn read_sys_attr(path: &Path, buf: &mut String) -> std::io::Result<bool> {
    match read_sys_file(path, buf) {
        Ok(()) => Ok(true),
        Err(e) if sys_attr_absent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn sys_attr_absent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied)
        || matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENODEV | libc::ENXIO)
        )
}
