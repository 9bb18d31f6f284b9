//! Reading procfs and sysfs files into reused buffers: whole files with read(2) or pread(2)
//! straight into a `String`'s spare capacity, and one-value attributes.

use std::path::Path;

use crate::collector::CollectorError;

/// Reads a whole file into `buf` (cleared first), reusing its allocation.
pub fn read_into(path: &Path, buf: &mut String) -> Result<(), CollectorError> {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut file| read_file_into(&mut file, buf))
        .map_err(|e| CollectorError::io(path, e))
}

/// Reads an open file from its current position to the end into `buf` (cleared first),
/// reusing its allocation; on error `buf` is left empty (still with its allocation).
pub fn read_file_into(file: &mut std::fs::File, buf: &mut String) -> std::io::Result<()> {
    fill_utf8(buf, |bytes| read_all(bytes, file, ReadAt::Position))
}

/// Reads a whole file from offset 0 into `buf` with positional reads (no seek), like
/// [`read_file_into`]. procfs and sysfs regenerate a file's content on a read at offset 0,
/// which is what lets [`util::SourceFile`] keep files open between scrapes.
pub fn read_file_at_into(file: &std::fs::File, buf: &mut String) -> std::io::Result<()> {
    fill_utf8(buf, |bytes| read_all(bytes, file, ReadAt::Offset))
}

fn fill_utf8(
    buf: &mut String,
    read: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut bytes = std::mem::take(buf).into_bytes();
    let read = read(&mut bytes);
    match (read, String::from_utf8(bytes)) {
        (Ok(()), Ok(text)) => {
            *buf = text;
            Ok(())
        }
        (result, Ok(text)) => {
            *buf = text;
            buf.clear();
            result
        }
        (result, Err(e)) => {
            let mut bytes = e.into_bytes();
            bytes.clear();
            // Empty, hence valid UTF-8: the allocation is kept.
            *buf = String::from_utf8(bytes).unwrap_or_default();
            result.and(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )))
        }
    }
}

/// Where [`read_all`] reads from.
#[derive(Clone, Copy)]
enum ReadAt {
    /// The file's position (read(2)).
    Position,
    /// Offsets from 0 (pread(2)), leaving the file's position alone.
    Offset,
}

/// Reads to end with read(2) or pread(2) straight into `bytes`' spare capacity.
/// `Read::read_to_end` would first stat and seek the file to size its buffer (two wasted
/// syscalls for procfs/sysfs, whose sizes are 0 or 4096), and a safe `&mut [u8]` would have to
/// be zeroed before every read. `bytes` keeps its capacity across scrapes.
fn read_all(bytes: &mut Vec<u8>, file: &std::fs::File, at: ReadAt) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    bytes.clear();
    loop {
        let len = bytes.len();
        if bytes.capacity() - len < 1024 {
            bytes.reserve(len.max(4096));
        }
        let spare = bytes.spare_capacity_mut();
        // SAFETY: the kernel writes at most `spare.len()` bytes into the spare capacity, which
        // `bytes` owns and nothing else borrows; the fd is open for the call's duration.
        let n = unsafe {
            match at {
                ReadAt::Position => {
                    libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len())
                }
                ReadAt::Offset => libc::pread(
                    file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    len as libc::off_t,
                ),
            }
        };
        match n {
            0 => return Ok(()),
            n if n > 0 => {
                // SAFETY: the kernel initialised the `n` bytes after `len` (n ≤ spare.len()).
                unsafe { bytes.set_len(len + n as usize) };
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    bytes.clear();
                    return Err(e);
                }
            }
        }
    }
}

/// Reads a one-value sysfs attribute, trimmed. `Ok(None)` when it does not exist.
pub fn read_attr(path: &Path, buf: &mut String) -> Result<Option<()>, CollectorError> {
    match read_into(path, buf) {
        Ok(()) => {
            let trimmed_len = buf.trim_end().len();
            buf.truncate(trimmed_len);
            Ok(Some(()))
        }
        Err(CollectorError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn whole_files_in_several_reads_positional_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        // Longer than the first 4 KiB read and not a multiple of it.
        let text: String = (0..1500).map(|i| format!("line{i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let mut buf = String::new();
        read_into(&path, &mut buf).unwrap();
        assert_eq!(buf, text);
        let file = std::fs::File::open(&path).unwrap();
        for _ in 0..2 {
            // Kept open: each call reads from offset 0 again.
            read_file_at_into(&file, &mut buf).unwrap();
            assert_eq!(buf, text);
        }
        std::fs::write(&path, "short\n").unwrap();
        read_file_at_into(&file, &mut buf).unwrap();
        assert_eq!(buf, "short\n");
    }

    #[test]
    fn invalid_utf8_is_an_error_and_leaves_the_buffer_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad");
        std::fs::write(&path, b"ok\n\xff\xfe\n").unwrap();
        let mut buf = String::from("previous content");
        let err = read_into(&path, &mut buf).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
        assert!(buf.is_empty());
        assert!(buf.capacity() > 0, "the allocation is kept");
        let dir_as_file = std::fs::File::open(dir.path()).unwrap();
        let e = read_file_at_into(&dir_as_file, &mut buf).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
        assert!(buf.is_empty());
    }

    #[test]
    fn read_into_reads_large_and_empty_files_and_rejects_invalid_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        std::fs::write(dir.path().join("bad"), [0xff, 0xfe]).unwrap();
        let mut buf = String::from("stale");
        read_into(&dir.path().join("big"), &mut buf).unwrap();
        assert_eq!(buf, big);
        read_into(&dir.path().join("empty"), &mut buf).unwrap();
        assert_eq!(buf, "");
        let err = read_into(&dir.path().join("bad"), &mut buf).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
        assert!(read_into(&dir.path().join("missing"), &mut buf).is_err());
    }
}
