//! Keeps the disk tier within its byte budget: a pure index of entry costs that says which keys to drop.
//!
//! It does no I/O and deletes nothing itself; it returns victims so the caller can remove the files outside
//! any lock (the pingora eviction-manager shape).
//!
//! What is counted is what the file system really spends, not the bytes written: each file costs its length
//! rounded up to the block size (at least one block), and each shard directory (`ab/` and `ab/cd/`) costs
//! `dir_bytes` while it holds an entry. Thousands of tiny variants otherwise overrun a budget tenfold (a 200-byte
//! file takes a 4 KiB block, and most of them sit alone in a 4 KiB leaf directory).
//!
//! The order is a segmented LRU (two segments, as in memcached and Caffeine): an entry starts in the probation
//! segment and moves to the protected one when it is used again (a disk read, or a memory hit reported by the
//! touch queue). Victims come from probation first, oldest first. A hot image that the memory tier serves and
//! a stream of one-off images are thus not ranked by last use alone, where ten one-offs after the last hit
//! would push the hot image out.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::key::CacheKey;

/// Keys touched before they were recorded (a memory hit while the disk write is still queued) remembered at
/// most; past it the set starts over.
const EARLY_TOUCHES: usize = 4096;

/// Share of the budget the protected segment may hold; past it, its oldest entries go back to probation.
const PROTECTED_PERCENT: u64 = 80;

/// How the file system charges for what the tier stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accounting {
    /// Allocation unit: file lengths are rounded up to it, and every file costs at least one.
    pub block: u64,
    /// Cost of one shard directory while it exists.
    pub dir_bytes: u64,
    /// Fixed cost counted from the start (the root and temp directories, the budget file).
    pub base_bytes: u64,
}

impl Accounting {
    /// Logical bytes only: no rounding, free directories (unit tests of the ordering).
    pub const EXACT: Accounting = Accounting { block: 1, dir_bytes: 0, base_bytes: 0 };

    /// A file system allocating in `block`-byte units (at least 4 KiB, which is what ext4, XFS and tmpfs use);
    /// a small directory takes one block, and the root, temp directory and budget file take one each.
    pub fn blocks(block: u64) -> Accounting {
        let block = block.max(4096);
        Accounting { block, dir_bytes: block, base_bytes: 3 * block }
    }

    /// What a file of `len` bytes costs.
    pub fn file_cost(&self, len: u64) -> u64 {
        let block = self.block.max(1);
        len.max(1).div_ceil(block).saturating_mul(block)
    }
}

/// A key dropped from the index, and how many shard directories it left empty (0, 1 = its leaf, 2 = leaf and
/// parent), which the caller removes too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Victim {
    /// The dropped key.
    pub key: CacheKey,
    /// Shard directories now empty, innermost first.
    pub empty_dirs: u8,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    cost: u64,
    tick: u64,
    protected: bool,
    /// The original this entry was made from, when it is a variant (`None`: an original, or not known).
    source: Option<CacheKey>,
}

/// Segmented-LRU index of entry costs under a byte budget. Ticks are caller-supplied times (nanoseconds on the
/// wall clock, the same scale as file mtimes, so an index rebuilt from the directory keeps the order); equal
/// ticks are nudged apart.
#[derive(Debug)]
pub struct LruIndex {
    capacity: u64,
    accounting: Accounting,
    total: u64,
    protected_bytes: u64,
    entries: HashMap<CacheKey, Slot>,
    probation: BTreeMap<u64, CacheKey>,
    protected: BTreeMap<u64, CacheKey>,
    /// Entries per leaf directory (`ab/cd`, the first two key bytes) and per parent (`ab`).
    leaves: HashMap<[u8; 2], u32>,
    parents: HashMap<u8, u32>,
    /// Touched before being recorded: such an entry was already used again, so it starts protected.
    early_touches: HashSet<CacheKey>,
    /// Source key -> the indexed variants made from it, so a purge finds them without a scan. Kept in step with
    /// `entries` (a key leaves it when it leaves the index), so it is bounded by the number of entries.
    variants: HashMap<CacheKey, Vec<CacheKey>>,
}

fn place(order: &mut BTreeMap<u64, CacheKey>, mut tick: u64, key: CacheKey) -> u64 {
    while order.contains_key(&tick) {
        tick = tick.wrapping_add(1);
    }
    order.insert(tick, key);
    tick
}

impl LruIndex {
    /// An empty index with a budget of `capacity_bytes`, charging as `accounting` says.
    pub fn new(capacity_bytes: u64, accounting: Accounting) -> LruIndex {
        LruIndex {
            capacity: capacity_bytes,
            accounting,
            total: accounting.base_bytes,
            protected_bytes: 0,
            entries: HashMap::new(),
            probation: BTreeMap::new(),
            protected: BTreeMap::new(),
            leaves: HashMap::new(),
            parents: HashMap::new(),
            early_touches: HashSet::new(),
            variants: HashMap::new(),
        }
    }

    /// How the index charges.
    pub fn accounting(&self) -> Accounting {
        self.accounting
    }

    /// Records an entry of `len` bytes for `key`, used at `tick` (replacing any earlier record; an entry that
    /// was protected stays protected: rewriting it is another use). Does not evict: see `evict_to`.
    pub fn record(&mut self, key: CacheKey, len: u64, tick: u64) {
        let was_protected = self.remove(&key).is_some_and(|(_, was_protected)| was_protected);
        let protected = self.early_touches.remove(&key) || was_protected;
        let cost = self.accounting.file_cost(len);
        let tick =
            if protected { place(&mut self.protected, tick, key) } else { place(&mut self.probation, tick, key) };
        self.entries.insert(key, Slot { cost, tick, protected, source: None });
        self.total += cost;
        if protected {
            self.protected_bytes += cost;
        }
        let bytes = key.as_bytes();
        let leaf = self.leaves.entry([bytes[0], bytes[1]]).or_default();
        *leaf += 1;
        if *leaf == 1 {
            self.total += self.accounting.dir_bytes;
            let parent = self.parents.entry(bytes[0]).or_default();
            *parent += 1;
            if *parent == 1 {
                self.total += self.accounting.dir_bytes;
            }
        }
        self.demote_overflow();
    }

    /// Records that the indexed entry `key` was made from `source` (a variant of it); an original (`source` is
    /// `key`) needs no link. Does nothing for a key not indexed.
    pub fn link_source(&mut self, key: CacheKey, source: CacheKey) {
        let Some(slot) = self.entries.get_mut(&key) else { return };
        let source = Some(source).filter(|source| *source != key);
        if slot.source == source {
            return;
        }
        let previous = std::mem::replace(&mut slot.source, source);
        if let Some(previous) = previous {
            self.unlink(previous, &key);
        }
        if let Some(source) = source {
            self.variants.entry(source).or_default().push(key);
        }
    }

    fn unlink(&mut self, source: CacheKey, key: &CacheKey) {
        if let Some(keys) = self.variants.get_mut(&source) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.variants.remove(&source);
            }
        }
    }

    /// The indexed variants made from `source` (not `source` itself).
    pub fn variants_of(&self, source: &CacheKey) -> Vec<CacheKey> {
        self.variants.get(source).cloned().unwrap_or_default()
    }

    /// Marks `key` as used at `tick`, moving it to the protected segment; false if it is not indexed (then it
    /// starts protected if it is recorded soon).
    pub fn touch(&mut self, key: &CacheKey, tick: u64) -> bool {
        let Some(slot) = self.entries.get_mut(key) else {
            if self.early_touches.len() >= EARLY_TOUCHES {
                self.early_touches.clear();
            }
            self.early_touches.insert(*key);
            return false;
        };
        if slot.protected {
            self.protected.remove(&slot.tick);
        } else {
            self.probation.remove(&slot.tick);
            slot.protected = true;
            self.protected_bytes += slot.cost;
        }
        slot.tick = place(&mut self.protected, tick, *key);
        self.demote_overflow();
        true
    }

    /// Keeps the protected segment within its share, so probation always has room for new entries to prove
    /// themselves.
    fn demote_overflow(&mut self) {
        let limit = self.capacity / 100 * PROTECTED_PERCENT;
        while self.protected_bytes > limit {
            let Some((tick, key)) = self.protected.pop_first() else { break };
            if let Some(slot) = self.entries.get_mut(&key) {
                slot.protected = false;
                self.protected_bytes -= slot.cost;
                slot.tick = place(&mut self.probation, tick, key);
            }
        }
    }

    /// Forgets `key`: the victim record (with the directories it left empty) and whether it was protected.
    pub fn remove(&mut self, key: &CacheKey) -> Option<(Victim, bool)> {
        let slot = self.entries.remove(key)?;
        if let Some(source) = slot.source {
            self.unlink(source, key);
        }
        if slot.protected {
            self.protected.remove(&slot.tick);
            self.protected_bytes -= slot.cost;
        } else {
            self.probation.remove(&slot.tick);
        }
        self.total -= slot.cost;
        let bytes = key.as_bytes();
        let mut empty_dirs = 0;
        if let Some(leaf) = self.leaves.get_mut(&[bytes[0], bytes[1]]) {
            *leaf -= 1;
            if *leaf == 0 {
                self.leaves.remove(&[bytes[0], bytes[1]]);
                self.total -= self.accounting.dir_bytes;
                empty_dirs = 1;
                if let Some(parent) = self.parents.get_mut(&bytes[0]) {
                    *parent -= 1;
                    if *parent == 0 {
                        self.parents.remove(&bytes[0]);
                        self.total -= self.accounting.dir_bytes;
                        empty_dirs = 2;
                    }
                }
            }
        }
        Some((Victim { key: *key, empty_dirs }, slot.protected))
    }

    /// Drops entries, probation first and oldest first, until the total is at most `target`; returns them in
    /// the order dropped.
    pub fn evict_to(&mut self, target: u64) -> Vec<Victim> {
        let mut victims = Vec::new();
        while self.total > target {
            let oldest = self.probation.first_key_value().or_else(|| self.protected.first_key_value());
            let Some((_, &key)) = oldest else { break };
            if let Some((victim, _)) = self.remove(&key) {
                victims.push(victim);
            }
        }
        victims
    }

    /// Records `key` at `tick` and evicts down to the budget: the victims, oldest first. The key just recorded
    /// is a victim only if it alone does not fit.
    pub fn insert(&mut self, key: CacheKey, len: u64, tick: u64) -> Vec<Victim> {
        if self.accounting.file_cost(len) > self.capacity {
            return self.remove(&key).map(|(victim, _)| victim).into_iter().collect();
        }
        self.record(key, len, tick);
        self.evict_to(self.capacity)
    }

    /// Brings the index in line with a scan of the directory that started at `scan_started`: `found` lists
    /// every entry file as (key, length, mtime tick, source key when known). Entries the index knows keep their
    /// place (its recency is fresher than an mtime) and their source; new ones join probation at their mtime;
    /// known entries missing from the scan and older than it were deleted by someone else and are forgotten.
    pub fn reconcile(&mut self, found: Vec<(CacheKey, u64, u64, Option<CacheKey>)>, scan_started: u64) {
        let seen: HashSet<CacheKey> = found.iter().map(|&(key, _, _, _)| key).collect();
        let gone: Vec<CacheKey> = self
            .entries
            .iter()
            .filter(|(key, slot)| slot.tick < scan_started && !seen.contains(key))
            .map(|(key, _)| *key)
            .collect();
        for key in gone {
            self.remove(&key);
        }
        for (key, len, mtime, source) in found {
            let (tick, source) = match self.entries.get(&key) {
                Some(slot) if slot.cost == self.accounting.file_cost(len) => continue,
                Some(slot) => (slot.tick, slot.source.or(source)),
                None => (mtime, source),
            };
            self.record(key, len, tick);
            if let Some(source) = source {
                self.link_source(key, source);
            }
        }
    }

    /// Bytes charged for everything indexed, directories and fixed overhead included.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The byte budget.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Number of indexed entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is indexed.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.entries.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u32) -> CacheKey {
        CacheKey::from_parts(&[&i.to_le_bytes()])
    }

    fn keys(victims: &[Victim]) -> Vec<CacheKey> {
        victims.iter().map(|v| v.key).collect()
    }

    #[test]
    fn evicts_oldest_first_and_protects_what_was_used_again() {
        let mut lru = LruIndex::new(100, Accounting::EXACT);
        assert!(lru.insert(k(1), 30, 1).is_empty());
        assert!(lru.insert(k(2), 30, 2).is_empty());
        assert!(lru.insert(k(3), 30, 3).is_empty());
        assert_eq!(lru.total_bytes(), 90);
        // 1 was used again, so 2 then 3 go when a big entry arrives, although 1 is older than both.
        assert!(lru.touch(&k(1), 4));
        assert_eq!(keys(&lru.insert(k(4), 65, 5)), vec![k(2), k(3)]);
        assert_eq!(lru.total_bytes(), 95);
        assert!(lru.contains(&k(1)) && lru.contains(&k(4)));
        assert_eq!(lru.len(), 2);
        assert!(!lru.touch(&k(2), 6));
    }

    #[test]
    fn one_off_entries_do_not_push_out_a_hot_one() {
        let mut lru = LruIndex::new(100, Accounting::EXACT);
        lru.insert(k(0), 30, 0);
        lru.touch(&k(0), 1);
        for i in 1..20 {
            lru.insert(k(i), 30, u64::from(i) + 1);
        }
        assert!(lru.contains(&k(0)));
        assert_eq!(lru.len(), 3);
    }

    #[test]
    fn the_protected_segment_is_bounded() {
        let mut lru = LruIndex::new(100, Accounting::EXACT);
        for i in 0..3 {
            lru.insert(k(i), 30, u64::from(i));
            lru.touch(&k(i), 10 + u64::from(i));
        }
        // 90 bytes protected is over 80: the oldest protected went back to probation and goes first.
        assert_eq!(keys(&lru.insert(k(9), 30, 20)), vec![k(0)]);
    }

    #[test]
    fn replacing_a_key_updates_size_not_count() {
        let mut lru = LruIndex::new(100, Accounting::EXACT);
        lru.insert(k(1), 40, 1);
        lru.insert(k(2), 40, 2);
        assert!(lru.insert(k(1), 50, 3).is_empty());
        assert_eq!(lru.total_bytes(), 90);
        assert_eq!(lru.len(), 2);
        assert_eq!(keys(&lru.insert(k(3), 20, 4)), vec![k(2)]);
    }

    #[test]
    fn oversized_entry_is_its_own_only_victim() {
        let mut lru = LruIndex::new(100, Accounting::EXACT);
        lru.insert(k(1), 10, 1);
        lru.insert(k(2), 10, 2);
        assert!(lru.insert(k(3), 101, 3).is_empty());
        assert!(!lru.contains(&k(3)));
        assert_eq!(lru.total_bytes(), 20);
        // Also when it replaces a smaller record of itself.
        assert_eq!(keys(&lru.insert(k(1), 500, 4)), vec![k(1)]);
        assert_eq!(lru.total_bytes(), 10);
    }

    #[test]
    fn blocks_and_directories_are_charged_and_released() {
        let acc = Accounting::blocks(4096);
        let mut lru = LruIndex::new(1 << 20, acc);
        assert_eq!(lru.total_bytes(), 3 * 4096);
        lru.record(k(1), 10, 1);
        // One block for the file, one for its leaf directory, one for the parent.
        assert_eq!(lru.total_bytes(), 6 * 4096);
        lru.record(k(1), 5000, 2);
        assert_eq!(lru.total_bytes(), 7 * 4096);
        let (victim, _) = lru.remove(&k(1)).unwrap();
        assert_eq!(victim.empty_dirs, 2);
        assert_eq!(lru.total_bytes(), 3 * 4096);
    }

    #[test]
    fn reconcile_adopts_new_files_and_forgets_deleted_ones() {
        let mut lru = LruIndex::new(1000, Accounting::EXACT);
        lru.record(k(1), 10, 5);
        lru.record(k(2), 10, 50);
        // The scan started at 20: k(1) is gone (deleted by another process), k(2) was written during the scan,
        // k(3) is another process's file.
        lru.reconcile(vec![(k(3), 30, 7, None)], 20);
        assert!(!lru.contains(&k(1)));
        assert!(lru.contains(&k(2)) && lru.contains(&k(3)));
        assert_eq!(lru.total_bytes(), 40);
        // k(3) has the older mtime, so it goes first.
        assert_eq!(keys(&lru.evict_to(10)), vec![k(3)]);
    }

    #[test]
    fn variants_are_linked_to_their_source_and_unlinked_when_they_leave() {
        let mut lru = LruIndex::new(1000, Accounting::EXACT);
        let source = k(0);
        lru.record(source, 10, 1);
        lru.link_source(source, source);
        for i in 1..4 {
            lru.record(k(i), 10, u64::from(i) + 1);
            lru.link_source(k(i), source);
        }
        // Linking twice does not list a key twice; an unindexed key is not linked.
        lru.link_source(k(1), source);
        lru.link_source(k(9), source);
        let mut variants = lru.variants_of(&source);
        variants.sort_unstable();
        let mut want = vec![k(1), k(2), k(3)];
        want.sort_unstable();
        assert_eq!(variants, want);
        // Removal, eviction and a scan that no longer finds a file all unlink.
        lru.remove(&k(2));
        assert_eq!(keys(&lru.evict_to(20)), vec![k(0)]);
        lru.reconcile(vec![(k(3), 10, 4, Some(source))], 100);
        assert_eq!(lru.variants_of(&source), vec![k(3)]);
        // A new file found by a scan is linked from what its header said.
        lru.reconcile(vec![(k(3), 10, 4, Some(source)), (k(5), 10, 5, Some(source))], 100);
        let mut variants = lru.variants_of(&source);
        variants.sort_unstable();
        let mut want = vec![k(3), k(5)];
        want.sort_unstable();
        assert_eq!(variants, want);
        lru.remove(&k(3));
        lru.remove(&k(5));
        assert!(lru.variants.is_empty());
    }
}
