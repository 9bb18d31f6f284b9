//! Fragment inventories as compact sets: what a storage device holds (`present`), which of those
//! lack a `.digest` file, which failed their last scrub, and which are younger than the orphan
//! grace period, each as a roaring bitmap of fragment ids, plus the sizes in `present`'s order.
//! Also the pure reconciliation of an inventory with the DFS's `FRAGMENT` rows, fed in batches.
//! No I/O: bytes and sets in and out.

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::protocol::{INVENTORY_PART, InventoryPart};

/// How many ids of each state an audit keeps as a sample.
pub const SAMPLE: usize = 20;

/// What one storage device holds, as of one scan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInventory {
    pub device_id: u32,
    /// Fragment files present (`<dir>/<id>`).
    pub present: RoaringBitmap,
    /// Present fragments without `<id>.digest`.
    pub no_digest: RoaringBitmap,
    /// Present fragments whose last scrub did not match their digest.
    pub corrupt: RoaringBitmap,
    /// Present fragments modified within the orphan grace period (uploads may be in flight).
    pub recent: RoaringBitmap,
    /// Sizes in bytes of `present`'s ids in ascending id order (saturating at `u32::MAX`):
    /// 4 bytes per fragment, the largest part of an inventory.
    pub sizes: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("inventory encoding: {0}")]
    Encoding(#[source] postcard::Error),
    #[error("inventory bitmap {which}: {source}")]
    Bitmap {
        which: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("inventory has {sizes} sizes for {present} fragments")]
    Sizes { sizes: usize, present: u64 },
    #[error("inventory set {0} holds ids that are not present")]
    NotSubset(&'static str),
}

/// The wire form: each bitmap in roaring's portable serialization. [`WireRef`] and
/// [`InventoryParts`] write the same bytes without copying the sizes.
#[derive(Serialize, Deserialize)]
struct Wire {
    device_id: u32,
    present: Vec<u8>,
    no_digest: Vec<u8>,
    corrupt: Vec<u8>,
    recent: Vec<u8>,
    sizes: Vec<u32>,
}

/// [`Wire`] borrowing the inventory's sizes (4 bytes a fragment: not copied to be encoded).
#[derive(Serialize)]
struct WireRef<'a> {
    device_id: u32,
    present: Vec<u8>,
    no_digest: Vec<u8>,
    corrupt: Vec<u8>,
    recent: Vec<u8>,
    sizes: &'a [u32],
}

/// A bitmap in roaring's portable serialization without run containers (what the link and the
/// agent's state files hold), read back by [`bitmap_from_bytes`].
pub fn bitmap_bytes(b: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = b.serialize_into(&mut out);
    out
}

/// The cookie of roaring's serialization without run containers: what [`bitmap_bytes`] writes.
const NO_RUN_COOKIE: u32 = 12346;

/// Decodes a bitmap [`bitmap_bytes`] wrote. roaring's `deserialize_from` checks each
/// container's values but also takes run containers (an empty one among them) and containers
/// in any key order, which leave a bitmap whose lookups and re-serialization go wrong (an empty
/// container overflows `serialize_into`; found by fuzzing). So only the run-free form is taken,
/// and its container keys must ascend.
pub fn bitmap_from_bytes(
    which: &'static str,
    bytes: &[u8],
) -> Result<RoaringBitmap, InventoryError> {
    let malformed = |why: &str| InventoryError::Bitmap {
        which,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    };
    let word = |at: usize| {
        let b = bytes.get(at..at + 4)?;
        b.try_into().ok().map(u32::from_le_bytes)
    };
    if word(0) != Some(NO_RUN_COOKIE) {
        return Err(malformed(
            "not roaring's serialization without run containers",
        ));
    }
    let count = word(4).ok_or_else(|| malformed("no container count"))?;
    let mut last_key = None;
    for i in 0..count as usize {
        // Each container's description: its key and its cardinality - 1 (u16 each).
        let key =
            word(8 + 4 * i).ok_or_else(|| malformed("container descriptions cut short"))? as u16;
        if last_key.is_some_and(|last| key <= last) {
            return Err(malformed("container keys do not ascend"));
        }
        last_key = Some(key);
    }
    RoaringBitmap::deserialize_from(bytes)
        .map_err(|source| InventoryError::Bitmap { which, source })
}

impl DeviceInventory {
    /// The size of fragment `id`, if present.
    pub fn size_of(&self, id: u32) -> Option<u64> {
        if !self.present.contains(id) {
            return None;
        }
        let rank = self.present.rank(id) as usize;
        self.sizes.get(rank.checked_sub(1)?).map(|&s| u64::from(s))
    }

    pub fn total_bytes(&self) -> u64 {
        self.sizes.iter().map(|&s| u64::from(s)).sum()
    }

    pub fn encode(&self) -> Result<Vec<u8>, InventoryError> {
        postcard::to_stdvec(&self.wire()).map_err(InventoryError::Encoding)
    }

    fn wire(&self) -> WireRef<'_> {
        WireRef {
            device_id: self.device_id,
            present: bitmap_bytes(&self.present),
            no_digest: bitmap_bytes(&self.no_digest),
            corrupt: bitmap_bytes(&self.corrupt),
            recent: bitmap_bytes(&self.recent),
            sizes: &self.sizes,
        }
    }

    /// [`Self::encode`]'s bytes as [`InventoryPart`]s of at most [`INVENTORY_PART`] bytes, made
    /// one at a time: the bitmaps are encoded first (small), the sizes (most of an inventory) as
    /// each part is made, so a send never holds the whole encoding beside the inventory.
    pub fn parts(&self, generation: u64) -> Result<InventoryParts<'_>, InventoryError> {
        // Everything before the sizes' elements: the struct up to an empty `sizes`, whose
        // length prefix is then replaced by the real one.
        let mut head = postcard::to_stdvec(&WireRef {
            sizes: &[],
            ..self.wire()
        })
        .map_err(InventoryError::Encoding)?;
        head.pop(); // the empty sequence's length, varint 0
        let mut len = [0u8; 10];
        head.extend_from_slice(varint(self.sizes.len() as u64, &mut len));
        let body: usize = self.sizes.iter().map(|&s| varint_len(s)).sum();
        let total = head.len() + body;
        Ok(InventoryParts {
            device_id: self.device_id,
            generation,
            total_len: u32::try_from(total).unwrap_or(u32::MAX),
            head,
            sizes: &self.sizes,
            offset: 0,
            next_size: 0,
        })
    }

    /// Decodes and checks an inventory from the network: sizes match, every set ⊆ present.
    pub fn decode(bytes: &[u8]) -> Result<DeviceInventory, InventoryError> {
        let w: Wire = postcard::from_bytes(bytes).map_err(InventoryError::Encoding)?;
        let inv = DeviceInventory {
            device_id: w.device_id,
            present: bitmap_from_bytes("present", &w.present)?,
            no_digest: bitmap_from_bytes("no_digest", &w.no_digest)?,
            corrupt: bitmap_from_bytes("corrupt", &w.corrupt)?,
            recent: bitmap_from_bytes("recent", &w.recent)?,
            sizes: w.sizes,
        };
        if inv.sizes.len() as u64 != inv.present.len() {
            return Err(InventoryError::Sizes {
                sizes: inv.sizes.len(),
                present: inv.present.len(),
            });
        }
        for (name, set) in [
            ("no_digest", &inv.no_digest),
            ("corrupt", &inv.corrupt),
            ("recent", &inv.recent),
        ] {
            if !set.is_subset(&inv.present) {
                return Err(InventoryError::NotSubset(name));
            }
        }
        Ok(inv)
    }
}

/// The largest inventory encoding a receiver reassembles (10 million fragments encode to about
/// 60 MB: 40 MB of sizes plus the bitmaps).
pub const MAX_INVENTORY_BYTES: u32 = 128 << 20;

/// The parts of one inventory's encoding, made as they are taken ([`DeviceInventory::parts`]).
pub struct InventoryParts<'a> {
    device_id: u32,
    generation: u64,
    total_len: u32,
    head: Vec<u8>,
    sizes: &'a [u32],
    /// Bytes made so far.
    offset: usize,
    /// The first size not made yet.
    next_size: usize,
}

impl InventoryParts<'_> {
    /// The whole encoding's length.
    pub fn total_len(&self) -> u32 {
        self.total_len
    }
}

impl Iterator for InventoryParts<'_> {
    type Item = InventoryPart;

    fn next(&mut self) -> Option<InventoryPart> {
        let total = self.total_len as usize;
        if self.offset >= total {
            return None;
        }
        let mut data = Vec::with_capacity(INVENTORY_PART.min(total - self.offset));
        if self.offset < self.head.len() {
            let end = self.head.len().min(self.offset + INVENTORY_PART);
            data.extend_from_slice(&self.head[self.offset..end]);
        }
        // Whole varints only: a part may end short of INVENTORY_PART by up to 4 bytes.
        let mut buf = [0u8; 10];
        while let Some(&s) = self.sizes.get(self.next_size) {
            if data.len() == INVENTORY_PART || self.offset + data.len() < self.head.len() {
                break;
            }
            let v = varint(u64::from(s), &mut buf);
            if data.len() + v.len() > INVENTORY_PART {
                break;
            }
            data.extend_from_slice(v);
            self.next_size += 1;
        }
        let part = InventoryPart {
            device_id: self.device_id,
            generation: self.generation,
            total_len: self.total_len,
            offset: self.offset as u32,
            data,
        };
        self.offset += part.data.len();
        Some(part)
    }
}

/// `value` as postcard writes an unsigned integer (LEB128).
fn varint(mut value: u64, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buf[i] = byte;
            return &buf[..=i];
        }
        buf[i] = byte | 0x80;
        i += 1;
    }
}

fn varint_len(value: u32) -> usize {
    let mut buf = [0u8; 10];
    varint(u64::from(value), &mut buf).len()
}

#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    #[error(
        "inventory of device {device} announces {total_len} bytes (at most {MAX_INVENTORY_BYTES}, at least 1)"
    )]
    Size { device: u32, total_len: u32 },
    #[error(
        "inventory part of device {device} generation {generation} at offset {offset} does not follow the part before"
    )]
    OutOfOrder {
        device: u32,
        generation: u64,
        offset: u32,
    },
    #[error("inventory parts of device {device} overrun its {total_len} bytes")]
    Overrun { device: u32, total_len: u32 },
    #[error("inventory of device {device}: {source}")]
    Inventory {
        device: u32,
        #[source]
        source: InventoryError,
    },
    #[error("inventory sent for device {sent} describes device {inside}")]
    WrongDevice { sent: u32, inside: u32 },
}

/// Reassembles the parts of one inventory at a time (a connection sends one device's parts
/// after another's): memory is at most [`MAX_INVENTORY_BYTES`] plus one part. A part that does
/// not follow the one before drops the inventory in progress; a new one starts at offset 0.
#[derive(Debug, Default)]
pub struct InventoryAssembler {
    current: Option<(u32, u64, u32, Vec<u8>)>,
}

impl InventoryAssembler {
    /// The inventory once its last part is in; checked (`DeviceInventory::decode`).
    pub fn push(&mut self, part: InventoryPart) -> Result<Option<DeviceInventory>, AssemblyError> {
        let device = part.device_id;
        if part.offset == 0 {
            if part.total_len == 0 || part.total_len > MAX_INVENTORY_BYTES {
                self.current = None;
                return Err(AssemblyError::Size {
                    device,
                    total_len: part.total_len,
                });
            }
            let capacity = (part.total_len as usize).min(4 << 20);
            self.current = Some((
                device,
                part.generation,
                part.total_len,
                Vec::with_capacity(capacity),
            ));
        }
        let Some((d, generation, total_len, buf)) = &mut self.current else {
            return Err(AssemblyError::OutOfOrder {
                device,
                generation: part.generation,
                offset: part.offset,
            });
        };
        if (*d, *generation, *total_len) != (device, part.generation, part.total_len)
            || part.offset as usize != buf.len()
        {
            self.current = None;
            return Err(AssemblyError::OutOfOrder {
                device,
                generation: part.generation,
                offset: part.offset,
            });
        }
        let total = *total_len as usize;
        if buf.len() + part.data.len() > total {
            let total_len = *total_len;
            self.current = None;
            return Err(AssemblyError::Overrun { device, total_len });
        }
        buf.extend_from_slice(&part.data);
        if buf.len() < total {
            return Ok(None);
        }
        let Some((_, _, _, bytes)) = self.current.take() else {
            return Ok(None);
        };
        let inv = DeviceInventory::decode(&bytes)
            .map_err(|source| AssemblyError::Inventory { device, source })?;
        if inv.device_id != device {
            return Err(AssemblyError::WrongDevice {
                sent: device,
                inside: inv.device_id,
            });
        }
        Ok(Some(inv))
    }
}

/// A change to one device's inventory between two of its generations, for a receiver that
/// holds the earlier one: the ids no longer present (`removed`), and the whole state of the
/// ids added or changed (`set`, with their sizes in `set`'s order and which of them lack a
/// digest, failed their scrub or are recent). Applied with [`DeviceInventory::apply`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InventoryDelta {
    pub device_id: u32,
    pub removed: RoaringBitmap,
    pub set: RoaringBitmap,
    /// Sizes of `set`'s ids in ascending id order.
    pub sizes: Vec<u32>,
    pub no_digest: RoaringBitmap,
    pub corrupt: RoaringBitmap,
    pub recent: RoaringBitmap,
}

/// [`InventoryDelta`]'s wire form (each bitmap in roaring's portable serialization).
#[derive(Serialize, Deserialize)]
struct DeltaWire {
    device_id: u32,
    removed: Vec<u8>,
    set: Vec<u8>,
    sizes: Vec<u32>,
    no_digest: Vec<u8>,
    corrupt: Vec<u8>,
    recent: Vec<u8>,
}

impl InventoryDelta {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.set.is_empty()
    }

    pub fn encode(&self) -> Result<Vec<u8>, InventoryError> {
        postcard::to_stdvec(&DeltaWire {
            device_id: self.device_id,
            removed: bitmap_bytes(&self.removed),
            set: bitmap_bytes(&self.set),
            sizes: self.sizes.clone(),
            no_digest: bitmap_bytes(&self.no_digest),
            corrupt: bitmap_bytes(&self.corrupt),
            recent: bitmap_bytes(&self.recent),
        })
        .map_err(InventoryError::Encoding)
    }

    /// Decodes and checks a delta from the network: sizes match `set`, every flag set ⊆ `set`,
    /// nothing both removed and set.
    pub fn decode(bytes: &[u8]) -> Result<InventoryDelta, InventoryError> {
        let w: DeltaWire = postcard::from_bytes(bytes).map_err(InventoryError::Encoding)?;
        let d = InventoryDelta {
            device_id: w.device_id,
            removed: bitmap_from_bytes("removed", &w.removed)?,
            set: bitmap_from_bytes("set", &w.set)?,
            sizes: w.sizes,
            no_digest: bitmap_from_bytes("no_digest", &w.no_digest)?,
            corrupt: bitmap_from_bytes("corrupt", &w.corrupt)?,
            recent: bitmap_from_bytes("recent", &w.recent)?,
        };
        if d.sizes.len() as u64 != d.set.len() {
            return Err(InventoryError::Sizes {
                sizes: d.sizes.len(),
                present: d.set.len(),
            });
        }
        for (name, flags) in [
            ("no_digest", &d.no_digest),
            ("corrupt", &d.corrupt),
            ("recent", &d.recent),
        ] {
            if !flags.is_subset(&d.set) {
                return Err(InventoryError::NotSubset(name));
            }
        }
        if !d.removed.is_disjoint(&d.set) {
            return Err(InventoryError::NotSubset("removed"));
        }
        Ok(d)
    }
}

impl DeviceInventory {
    /// The delta that brings an inventory differing from this one only in the ids `touched`
    /// to this one: those present here with their whole state, the others removed.
    pub fn delta(&self, touched: &RoaringBitmap) -> InventoryDelta {
        let set = touched & &self.present;
        InventoryDelta {
            device_id: self.device_id,
            removed: touched - &set,
            sizes: set
                .iter()
                .map(|id| {
                    self.size_of(id)
                        .map_or(0, |s| u32::try_from(s).unwrap_or(u32::MAX))
                })
                .collect(),
            no_digest: &self.no_digest & &set,
            corrupt: &self.corrupt & &set,
            recent: &self.recent & &set,
            set,
        }
    }

    /// Applies `delta` in place: its removed ids go, its set ids take the delta's state
    /// (added or replaced). The sizes are moved in place in one pass each way (no second size
    /// vector: 10 million fragments hold 40 MB of sizes), the vector growing by the ids added.
    pub fn apply(&mut self, delta: &InventoryDelta) {
        // Pass 1, forward: drop removed ids, replace the sizes of set ids already present.
        let gone = &delta.removed & &self.present;
        let replaced = &delta.set & &self.present;
        if !gone.is_empty() || !replaced.is_empty() {
            let mut w = 0;
            for (r, id) in self.present.iter().enumerate() {
                if gone.contains(id) {
                    continue;
                }
                self.sizes[w] = if replaced.contains(id) {
                    let rank = delta.set.rank(id) as usize;
                    delta.sizes.get(rank - 1).copied().unwrap_or(0)
                } else {
                    self.sizes[r]
                };
                w += 1;
            }
            self.sizes.truncate(w);
            self.present -= &gone;
        }
        // Pass 2, backward: make room for the new ids and move each run of old sizes once.
        let added = &delta.set - &self.present;
        if !added.is_empty() {
            self.present |= &added;
            let old_len = self.sizes.len();
            self.sizes.resize(old_len + added.len() as usize, 0);
            let (mut read, mut write) = (old_len, self.sizes.len());
            let new_ids: Vec<u32> = added.iter().collect();
            for &id in new_ids.iter().rev() {
                let at = self.present.rank(id) as usize - 1;
                let run = write - 1 - at;
                self.sizes.copy_within(read - run..read, at + 1);
                read -= run;
                let rank = delta.set.rank(id) as usize;
                self.sizes[at] = delta.sizes.get(rank - 1).copied().unwrap_or(0);
                write = at;
            }
        }
        for (flags, delta_flags) in [
            (&mut self.no_digest, &delta.no_digest),
            (&mut self.corrupt, &delta.corrupt),
            (&mut self.recent, &delta.recent),
        ] {
            *flags -= &delta.removed;
            *flags -= &delta.set;
            *flags |= delta_flags;
        }
    }
}

/// Count, bytes and a sample of one state's fragments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    pub count: u64,
    pub bytes: u64,
    pub sample: Vec<u32>,
}

impl StateCount {
    fn of(set: &RoaringBitmap, inv: &DeviceInventory) -> StateCount {
        StateCount {
            count: set.len(),
            bytes: set.iter().filter_map(|id| inv.size_of(id)).sum(),
            sample: set.iter().take(SAMPLE).collect(),
        }
    }
}

/// One device's reconciliation with the DFS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentAudit {
    pub device_id: u32,
    pub present: StateCount,
    /// In the database, not on disk (no bytes: the disk does not have them).
    pub missing: StateCount,
    /// On disk, not in the database, older than the grace period.
    pub orphaned: StateCount,
    pub corrupt: StateCount,
    pub no_digest: StateCount,
    /// Ids in the database that are not fragment ids this inventory can hold (negative, > u32).
    pub unrepresentable: u64,
}

/// Feeds the database's ids for one device in batches; memory is one bitmap of the database's
/// ids for that device (compressed, a few bytes per id at most), never a whole result set.
#[derive(Debug)]
pub struct Reconciler<'a> {
    inv: &'a DeviceInventory,
    in_db: RoaringBitmap,
    unrepresentable: u64,
}

impl<'a> Reconciler<'a> {
    pub fn new(inv: &'a DeviceInventory) -> Reconciler<'a> {
        Reconciler {
            inv,
            in_db: RoaringBitmap::new(),
            unrepresentable: 0,
        }
    }

    pub fn feed(&mut self, ids: &[i64]) {
        for &id in ids {
            match u32::try_from(id) {
                Ok(id) => {
                    self.in_db.insert(id);
                }
                Err(_) => self.unrepresentable += 1,
            }
        }
    }

    /// Orphan candidates: present, not in the database, not recent.
    pub fn orphans(&self) -> RoaringBitmap {
        &(&self.inv.present - &self.in_db) - &self.inv.recent
    }

    pub fn finish(self) -> FragmentAudit {
        let missing = &self.in_db - &self.inv.present;
        let orphans = self.orphans();
        FragmentAudit {
            device_id: self.inv.device_id,
            present: StateCount {
                count: self.inv.present.len(),
                bytes: self.inv.total_bytes(),
                sample: Vec::new(),
            },
            missing: StateCount {
                count: missing.len(),
                bytes: 0,
                sample: missing.iter().take(SAMPLE).collect(),
            },
            orphaned: StateCount::of(&orphans, self.inv),
            corrupt: StateCount::of(&self.inv.corrupt, self.inv),
            no_digest: StateCount::of(&self.inv.no_digest, self.inv),
            unrepresentable: self.unrepresentable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> DeviceInventory {
        let mut i = DeviceInventory {
            device_id: 7,
            ..Default::default()
        };
        for (id, size) in [(100, 10), (101, 20), (200, 30), (300, 40), (301, 50)] {
            i.present.insert(id);
            i.sizes.push(size);
        }
        i.no_digest.insert(101);
        i.corrupt.insert(200);
        i.recent.insert(301);
        i
    }

    #[test]
    fn bitmaps_are_taken_only_in_the_form_bitmap_bytes_writes() {
        let b: RoaringBitmap = [1, 2, 70_000, 200_000].into_iter().collect();
        assert_eq!(bitmap_from_bytes("t", &bitmap_bytes(&b)).unwrap(), b);
        assert_eq!(
            bitmap_from_bytes("t", &bitmap_bytes(&RoaringBitmap::new())).unwrap(),
            RoaringBitmap::new()
        );

        // A run container holding no run: roaring takes it, and its bitmap would not serialize.
        let mut empty_run = 12347u32.to_le_bytes().to_vec(); // one container, with runs
        empty_run.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0]); // run flags, key 0, card-1 0, 0 runs
        let e = bitmap_from_bytes("present", &empty_run)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("present") && e.contains("without run containers"),
            "{e}"
        );

        // Two containers, keys 1 then 0, each holding one value.
        let mut unordered = NO_RUN_COOKIE.to_le_bytes().to_vec();
        unordered.extend_from_slice(&2u32.to_le_bytes());
        unordered.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // descriptions
        unordered.extend_from_slice(&[24, 0, 0, 0, 26, 0, 0, 0]); // offsets
        unordered.extend_from_slice(&[5, 0, 6, 0]); // values
        let e = bitmap_from_bytes("set", &unordered)
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not ascend"), "{e}");
        unordered[8..16].copy_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
        let fixed = bitmap_from_bytes("set", &unordered).unwrap();
        assert_eq!(fixed.iter().collect::<Vec<_>>(), [5, 65_536 + 6]);

        assert!(bitmap_from_bytes("t", &[]).is_err());
        let mut cut = bitmap_bytes(&b);
        cut.truncate(10);
        assert!(bitmap_from_bytes("t", &cut).is_err());
    }

    /// An inventory of `ids` (size = id % 1000 + 1; flags by id's residue), as a scan makes it.
    fn made(ids: impl IntoIterator<Item = u32>) -> DeviceInventory {
        let mut i = DeviceInventory {
            device_id: 7,
            ..Default::default()
        };
        let mut ids: Vec<u32> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            i.present.insert(id);
            i.sizes.push(id % 1000 + 1);
            if id % 3 == 0 {
                i.no_digest.insert(id);
            }
            if id % 5 == 0 {
                i.corrupt.insert(id);
            }
            if id % 7 == 0 {
                i.recent.insert(id);
            }
        }
        i
    }

    #[test]
    fn a_delta_brings_the_old_inventory_to_the_new_one() {
        let cases: [(Vec<u32>, Vec<u32>); 6] = [
            (
                (0..50).collect(),
                (0..50).filter(|i| i % 4 != 0).chain(100..120).collect(),
            ),
            ((10..20).collect(), (0..30).collect()),
            ((0..30).collect(), Vec::new()),
            (Vec::new(), vec![5, 70_000, 4_000_000_000]),
            (
                (0..200_000).step_by(3).collect(),
                (0..200_000)
                    .step_by(3)
                    .filter(|i| i % 1000 != 0)
                    .chain([1, 2, 199_999])
                    .collect(),
            ),
            ((0..10).collect(), (0..10).collect()),
        ];
        for (old, new) in cases {
            let (old, mut new) = (made(old), made(new));
            // An id kept but changed (size and flags) travels in the delta as well.
            if let Some(id) = (&old.present & &new.present).min() {
                let rank = new.present.rank(id) as usize;
                new.sizes[rank - 1] += 7;
                new.corrupt.insert(id);
            }
            let touched = &(&old.present ^ &new.present)
                | &(&old.present & &new.present).iter().take(1).collect();
            let delta = new.delta(&touched);
            let wire = InventoryDelta::decode(&delta.encode().unwrap()).unwrap();
            assert_eq!(wire, delta);
            let mut applied = old.clone();
            applied.apply(&wire);
            assert_eq!(applied, new);
            // Applying it twice changes nothing more.
            applied.apply(&wire);
            assert_eq!(applied, new);
        }
    }

    #[test]
    fn a_delta_from_the_network_is_checked() {
        let new = made(0..10);
        let delta = new.delta(&[1, 2, 3, 20].into_iter().collect());
        assert_eq!(delta.removed, [20].into_iter().collect());
        assert_eq!(delta.sizes, [2, 3, 4]);
        let mut bad = delta.clone();
        bad.sizes.pop();
        assert!(matches!(
            InventoryDelta::decode(&bad.encode().unwrap()),
            Err(InventoryError::Sizes { .. })
        ));
        let mut bad = delta.clone();
        bad.recent.insert(9);
        assert!(matches!(
            InventoryDelta::decode(&bad.encode().unwrap()),
            Err(InventoryError::NotSubset("recent"))
        ));
        let mut bad = delta.clone();
        bad.removed.insert(1);
        assert!(matches!(
            InventoryDelta::decode(&bad.encode().unwrap()),
            Err(InventoryError::NotSubset("removed"))
        ));
        let bytes = delta.encode().unwrap();
        assert!(InventoryDelta::decode(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn round_trip_and_checks() {
        let i = inv();
        let bytes = i.encode().unwrap();
        assert_eq!(DeviceInventory::decode(&bytes).unwrap(), i);
        let mut bad = i.clone();
        bad.sizes.pop();
        assert!(matches!(
            DeviceInventory::decode(&bad.encode().unwrap()),
            Err(InventoryError::Sizes { .. })
        ));
        let mut bad = i.clone();
        bad.corrupt.insert(999);
        assert!(matches!(
            DeviceInventory::decode(&bad.encode().unwrap()),
            Err(InventoryError::NotSubset("corrupt"))
        ));
        assert!(DeviceInventory::decode(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn parts_made_one_at_a_time_are_the_encoding() {
        let mut big = inv();
        // Sizes of every varint length, across several parts.
        for id in 1_000..120_000u32 {
            big.present.insert(id);
            big.sizes.push(id.wrapping_mul(2_654_435_761) >> (id % 32));
        }
        for i in [inv(), DeviceInventory::default(), big] {
            let bytes = i.encode().unwrap();
            let parts: Vec<_> = i.parts(5).unwrap().collect();
            assert_eq!(i.parts(5).unwrap().total_len() as usize, bytes.len());
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.clone()).collect();
            assert_eq!(joined, bytes);
            let mut offset = 0;
            for p in &parts {
                assert!(p.data.len() <= INVENTORY_PART && !p.data.is_empty());
                assert_eq!(
                    (p.offset as usize, p.total_len as usize),
                    (offset, bytes.len())
                );
                assert_eq!((p.device_id, p.generation), (i.device_id, 5));
                offset += p.data.len();
            }
            let mut a = InventoryAssembler::default();
            let mut done = None;
            for p in parts {
                done = a.push(p).unwrap();
            }
            assert_eq!(done, Some(i));
        }
    }

    #[test]
    fn parts_reassemble_and_bad_parts_are_errors() {
        let mut big = inv();
        // Enough fragments for several parts.
        for id in 1_000..200_000u32 {
            big.present.insert(id);
            big.sizes.push(id);
        }
        let parts: Vec<_> = big.parts(3).unwrap().collect();
        assert!(parts.len() > 2, "{}", parts.len());
        let mut a = InventoryAssembler::default();
        let (last, first) = parts.split_last().unwrap();
        for p in first {
            assert!(a.push(p.clone()).unwrap().is_none());
        }
        assert_eq!(a.push(last.clone()).unwrap(), Some(big.clone()));
        // A skipped part, a part without a start, a wrong device, an oversize announcement.
        assert!(a.push(parts[0].clone()).unwrap().is_none());
        assert!(matches!(
            a.push(parts[2].clone()),
            Err(AssemblyError::OutOfOrder { .. })
        ));
        assert!(matches!(
            a.push(parts[1].clone()),
            Err(AssemblyError::OutOfOrder { .. })
        ));
        let mut other: Vec<_> = inv().parts(1).unwrap().collect();
        other[0].device_id = 8;
        assert!(matches!(
            a.push(other.remove(0)),
            Err(AssemblyError::WrongDevice { sent: 8, inside: 7 })
        ));
        let mut huge = parts[0].clone();
        huge.total_len = MAX_INVENTORY_BYTES + 1;
        assert!(matches!(a.push(huge), Err(AssemblyError::Size { .. })));
        let mut over = parts[0].clone();
        over.total_len = 10;
        assert!(matches!(a.push(over), Err(AssemblyError::Overrun { .. })));
        let mut garbage = parts[0].clone();
        garbage.total_len = 3;
        garbage.data = vec![0xff, 0xff, 0xff];
        assert!(matches!(
            a.push(garbage),
            Err(AssemblyError::Inventory { .. })
        ));
    }

    #[test]
    fn reconcile_states() {
        let i = inv();
        assert_eq!(i.size_of(200), Some(30));
        let mut r = Reconciler::new(&i);
        r.feed(&[100, 101, 200]);
        r.feed(&[400, -1]);
        let a = r.finish();
        assert_eq!(a.missing.count, 1);
        assert_eq!(a.missing.sample, vec![400]);
        // 300 is an orphan; 301 is too young to be one.
        assert_eq!((a.orphaned.count, a.orphaned.bytes), (1, 40));
        assert_eq!((a.corrupt.count, a.corrupt.bytes), (1, 30));
        assert_eq!(a.no_digest.sample, vec![101]);
        assert_eq!(a.unrepresentable, 1);
        assert_eq!(a.present.bytes, 150);
    }
}
