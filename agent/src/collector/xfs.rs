//! `xfs`: per-filesystem XFS statistics from /sys/fs/xfs/<device>/stats/stats, as node_exporter
//! 1.5 reports them. No XFS filesystems is a successful, empty collection (as in 1.5).

use super::source::DirListing;
use super::source::read_into;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "xfs",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(XfsCollector::default()))
}

/// The value counts procfs requires of each stats line node_exporter uses.
const LINE_LENGTHS: [(&str, &[usize]); 8] = [
    ("extent_alloc", &[4]),
    ("abt", &[4]),
    ("blk_map", &[7]),
    ("bmbt", &[4]),
    ("dir", &[4]),
    ("ig", &[7]),
    ("rw", &[2]),
    ("vnodes", &[7, 8]),
];

/// (stats line, value index, family, help).
const METRICS: [(&str, usize, &str, &str); 39] = [
    (
        "extent_alloc",
        0,
        "node_xfs_extent_allocation_extents_allocated_total",
        "Number of extents allocated for a filesystem.",
    ),
    (
        "extent_alloc",
        1,
        "node_xfs_extent_allocation_blocks_allocated_total",
        "Number of blocks allocated for a filesystem.",
    ),
    (
        "extent_alloc",
        2,
        "node_xfs_extent_allocation_extents_freed_total",
        "Number of extents freed for a filesystem.",
    ),
    (
        "extent_alloc",
        3,
        "node_xfs_extent_allocation_blocks_freed_total",
        "Number of blocks freed for a filesystem.",
    ),
    (
        "abt",
        0,
        "node_xfs_allocation_btree_lookups_total",
        "Number of allocation B-tree lookups for a filesystem.",
    ),
    (
        "abt",
        1,
        "node_xfs_allocation_btree_compares_total",
        "Number of allocation B-tree compares for a filesystem.",
    ),
    (
        "abt",
        2,
        "node_xfs_allocation_btree_records_inserted_total",
        "Number of allocation B-tree records inserted for a filesystem.",
    ),
    (
        "abt",
        3,
        "node_xfs_allocation_btree_records_deleted_total",
        "Number of allocation B-tree records deleted for a filesystem.",
    ),
    (
        "blk_map",
        0,
        "node_xfs_block_mapping_reads_total",
        "Number of block map for read operations for a filesystem.",
    ),
    (
        "blk_map",
        1,
        "node_xfs_block_mapping_writes_total",
        "Number of block map for write operations for a filesystem.",
    ),
    (
        "blk_map",
        2,
        "node_xfs_block_mapping_unmaps_total",
        "Number of block unmaps (deletes) for a filesystem.",
    ),
    (
        "blk_map",
        3,
        "node_xfs_block_mapping_extent_list_insertions_total",
        "Number of extent list insertions for a filesystem.",
    ),
    (
        "blk_map",
        4,
        "node_xfs_block_mapping_extent_list_deletions_total",
        "Number of extent list deletions for a filesystem.",
    ),
    (
        "blk_map",
        5,
        "node_xfs_block_mapping_extent_list_lookups_total",
        "Number of extent list lookups for a filesystem.",
    ),
    (
        "blk_map",
        6,
        "node_xfs_block_mapping_extent_list_compares_total",
        "Number of extent list compares for a filesystem.",
    ),
    (
        "bmbt",
        0,
        "node_xfs_block_map_btree_lookups_total",
        "Number of block map B-tree lookups for a filesystem.",
    ),
    (
        "bmbt",
        1,
        "node_xfs_block_map_btree_compares_total",
        "Number of block map B-tree compares for a filesystem.",
    ),
    (
        "bmbt",
        2,
        "node_xfs_block_map_btree_records_inserted_total",
        "Number of block map B-tree records inserted for a filesystem.",
    ),
    (
        "bmbt",
        3,
        "node_xfs_block_map_btree_records_deleted_total",
        "Number of block map B-tree records deleted for a filesystem.",
    ),
    (
        "dir",
        0,
        "node_xfs_directory_operation_lookup_total",
        "Number of file name directory lookups which miss the operating systems directory name lookup cache.",
    ),
    (
        "dir",
        1,
        "node_xfs_directory_operation_create_total",
        "Number of times a new directory entry was created for a filesystem.",
    ),
    (
        "dir",
        2,
        "node_xfs_directory_operation_remove_total",
        "Number of times an existing directory entry was created for a filesystem.",
    ),
    (
        "dir",
        3,
        "node_xfs_directory_operation_getdents_total",
        "Number of times the directory getdents operation was performed for a filesystem.",
    ),
    (
        "ig",
        0,
        "node_xfs_inode_operation_attempts_total",
        "Number of times the OS looked for an XFS inode in the inode cache.",
    ),
    (
        "ig",
        1,
        "node_xfs_inode_operation_found_total",
        "Number of times the OS looked for and found an XFS inode in the inode cache.",
    ),
    (
        "ig",
        2,
        "node_xfs_inode_operation_recycled_total",
        "Number of times the OS found an XFS inode in the cache, but could not use it as it was being recycled.",
    ),
    (
        "ig",
        3,
        "node_xfs_inode_operation_missed_total",
        "Number of times the OS looked for an XFS inode in the cache, but did not find it.",
    ),
    (
        "ig",
        4,
        "node_xfs_inode_operation_duplicates_total",
        "Number of times the OS tried to add a missing XFS inode to the inode cache, but found it had already been added by another process.",
    ),
    (
        "ig",
        5,
        "node_xfs_inode_operation_reclaims_total",
        "Number of times the OS reclaimed an XFS inode from the inode cache to free memory for another purpose.",
    ),
    (
        "ig",
        6,
        "node_xfs_inode_operation_attribute_changes_total",
        "Number of times the OS explicitly changed the attributes of an XFS inode.",
    ),
    (
        "rw",
        1,
        "node_xfs_read_calls_total",
        "Number of read(2) system calls made to files in a filesystem.",
    ),
    (
        "rw",
        0,
        "node_xfs_write_calls_total",
        "Number of write(2) system calls made to files in a filesystem.",
    ),
    (
        "vnodes",
        0,
        "node_xfs_vnode_active_total",
        "Number of vnodes not on free lists for a filesystem.",
    ),
    (
        "vnodes",
        1,
        "node_xfs_vnode_allocate_total",
        "Number of times vn_alloc called for a filesystem.",
    ),
    (
        "vnodes",
        2,
        "node_xfs_vnode_get_total",
        "Number of times vn_get called for a filesystem.",
    ),
    (
        "vnodes",
        3,
        "node_xfs_vnode_hold_total",
        "Number of times vn_hold called for a filesystem.",
    ),
    (
        "vnodes",
        4,
        "node_xfs_vnode_release_total",
        "Number of times vn_rele called for a filesystem.",
    ),
    (
        "vnodes",
        5,
        "node_xfs_vnode_reclaim_total",
        "Number of times vn_reclaim called for a filesystem.",
    ),
    (
        "vnodes",
        6,
        "node_xfs_vnode_remove_total",
        "Number of times vn_remove called for a filesystem.",
    ),
];

#[derive(Default)]
struct XfsCollector {
    buf: String,
    devices: Vec<(String, [f64; 39])>,
    mounted: DirListing,
}

/// Parses one stats file into the 39 values node_exporter reports (0 for absent lines).
/// Lines with unparsable numbers or the wrong count are passed to `malformed`.
pub fn parse_xfs_stats(text: &str, mut malformed: impl FnMut(&str)) -> [f64; 39] {
    let mut values = [0.0; 39];
    let mut numbers: Vec<u32> = Vec::with_capacity(16);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(label) = fields.next() else {
            continue;
        };
        let Some((_, lengths)) = LINE_LENGTHS.iter().find(|(l, _)| *l == label) else {
            continue;
        };
        numbers.clear();
        let mut ok = true;
        for f in fields {
            match f.parse() {
                Ok(n) => numbers.push(n),
                Err(_) => ok = false,
            }
        }
        if !ok || !lengths.contains(&numbers.len()) {
            malformed(line);
            continue;
        }
        for (slot, (metric_label, index, _, _)) in values.iter_mut().zip(METRICS) {
            if metric_label == label
                && let Some(n) = numbers.get(index)
            {
                *slot = f64::from(*n);
            }
        }
    }
    values
}

impl Collector for XfsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let root = ctx.paths.sys("fs/xfs");
        let names = self
            .mounted
            .names(ctx, &root, |_| true)
            .map_err(|e| CollectorError::io(&root, e))?
            .unwrap_or_default();
        self.devices.clear();
        for name in names.iter() {
            // /sys/fs/xfs/stats holds the global counters, not a device (node_exporter's glob
            // `fs/xfs/*/stats/stats` finds nothing under it either).
            if name == "stats" {
                continue;
            }
            let path = root.join(name).join("stats/stats");
            match read_into(&path, &mut self.buf) {
                Ok(()) => {}
                Err(CollectorError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        || source.kind() == std::io::ErrorKind::NotADirectory =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
            let values = parse_xfs_stats(&self.buf, |line| ctx.malformed(&path, line));
            self.devices.push((name.clone(), values));
        }
        if self.devices.is_empty() {
            return Ok(());
        }
        for (i, (_, _, name, help)) in METRICS.iter().enumerate() {
            let mut family = out.family(name, help, Kind::Counter)?;
            for (device, values) in &self.devices {
                family.sample(&[("device", device.as_str())], values[i])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("basic", "xfs", |_| Box::new(XfsCollector::default()));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let mut bad = Vec::new();
        let values = parse_xfs_stats(
            "extent_alloc 1 2 3\nrw 5 6\nig x 1 2 3 4 5 6\nvnodes 1 2 3 4 5 6 7\n",
            |l| bad.push(l.to_string()),
        );
        assert_eq!(bad.len(), 2);
        assert_eq!(values[0], 0.0);
        // read_calls_total is the second rw value, write_calls_total the first.
        assert_eq!(values[30], 6.0);
        assert_eq!(values[31], 5.0);
        assert_eq!(values[32], 1.0);
    }
}
