//! The source layer between the collector framework and the collectors — the role
//! prometheus/procfs plays for node_exporter: files read into reused buffers, files and
//! attributes kept open between scrapes, absences and directory listings trusted for one
//! hotplug epoch, CPU presence. Collectors read the host only through here.

mod attr;
mod cpu;
mod dir;
mod file;
mod proc;
mod read;
mod statfs;

pub use attr::{OpenAttr, read_sys_attr, read_sys_file, sys_attr_absent};
pub use cpu::CpuPresence;
pub use dir::{
    Absence, DirListing, entry_digits, numbered_entries, numbered_names, numbered_paths,
    same_listing, sorted_dir_names,
};
pub use file::SourceFile;
pub use proc::{parse_loadavg, parse_meminfo_line};
pub use read::{read_attr, read_file_at_into, read_file_into, read_into};
pub use statfs::{StatFs, statfs};
