//! The one `statfs(2)` wrapper: the filesystem collector's figures and the node state's sizes.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The figures node_exporter takes from `statfs(2)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatFs {
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub block_size: u64,
    /// `f_frsize`, the unit of the block counts (what statvfs(3) reports sizes in).
    pub fragment_size: u64,
    pub files: u64,
    pub files_free: u64,
}

/// `statfs(2)` on `path`.
pub fn statfs(path: &Path) -> io::Result<StatFs> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: c_path is a valid NUL-terminated string and buf is a properly sized out-parameter.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled buf.
    let s = unsafe { buf.assume_init() };
    #[allow(clippy::unnecessary_cast)] // field widths differ between targets
    Ok(StatFs {
        blocks: s.f_blocks as u64,
        blocks_free: s.f_bfree as u64,
        blocks_avail: s.f_bavail as u64,
        block_size: s.f_bsize as u64,
        fragment_size: s.f_frsize as u64,
        files: s.f_files as u64,
        files_free: s.f_ffree as u64,
    })
}
