//! Memory hits reported to the disk tier's recency: a bounded queue of keys, with a lossy filter in front so
//! that one hot image hit thousands of times a second is queued once per flush interval, not until the queue is
//! full of its copies and every other image's hits are dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::key::CacheKey;

/// Keys waiting to refresh their disk entries' recency (32 bytes each). A full queue drops touches: a hit never
/// waits for the disk.
pub(crate) const TOUCH_QUEUE: usize = 4096;
/// Slots of the filter: a key is remembered in one slot (picked by its bytes), so two keys sharing a slot only
/// cost an extra queued duplicate now and then. 8 bytes each.
const FILTER_SLOTS: usize = 4096;

/// The sending side, used on the hit path: no lock, no allocation, at most one atomic load and store and a
/// `try_send`.
pub(crate) struct Touches {
    sender: SyncSender<CacheKey>,
    /// A tag per slot of the keys queued since the last drain (0: none).
    queued: Box<[AtomicU64]>,
}

impl Touches {
    /// A queue of `TOUCH_QUEUE` keys and the receiver that drains it.
    pub(crate) fn new() -> (Touches, Receiver<CacheKey>) {
        let (sender, receiver) = sync_channel(TOUCH_QUEUE);
        let queued = (0..FILTER_SLOTS).map(|_| AtomicU64::new(0)).collect();
        (Touches { sender, queued }, receiver)
    }

    /// Queues `key` unless it is already queued (as far as the filter knows) or the queue is full.
    pub(crate) fn touch(&self, key: &CacheKey) {
        let (slot, tag) = slot_and_tag(key);
        let slot = &self.queued[slot];
        // Relaxed: a race only costs a duplicate in the queue (collapsed when applied) or one skipped touch.
        if slot.load(Ordering::Relaxed) == tag {
            return;
        }
        slot.store(tag, Ordering::Relaxed);
        if let Err(TrySendError::Full(_)) = self.sender.try_send(*key) {
            // Not queued after all: let the next hit try again.
            slot.store(0, Ordering::Relaxed);
            tracing::trace!("touch queue full; memory hit not applied to disk recency");
        }
    }

    /// Forgets what was queued, before the queue is drained: hits from now on queue their keys again.
    pub(crate) fn forget_queued(&self) {
        for slot in &*self.queued {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

/// The filter slot of `key` and its tag there (never 0). Keys are SHA-256 digests, so any of their bytes are
/// uniformly spread.
fn slot_and_tag(key: &CacheKey) -> (usize, u64) {
    let bytes = key.as_bytes();
    let [a, b, c, d, e, f, g, h, i, j, ..] = *bytes;
    let tag = u64::from_le_bytes([a, b, c, d, e, f, g, h]) | 1;
    (usize::from(u16::from_le_bytes([i, j])) % FILTER_SLOTS, tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey::from_parts(&[&[n]])
    }

    #[test]
    fn a_hot_key_is_queued_once_until_the_queue_is_drained() {
        let (touches, receiver) = Touches::new();
        for _ in 0..10_000 {
            touches.touch(&key(1));
        }
        touches.touch(&key(2));
        let queued: Vec<_> = receiver.try_iter().collect();
        assert_eq!(queued, vec![key(1), key(2)]);

        touches.forget_queued();
        touches.touch(&key(1));
        assert_eq!(receiver.try_iter().collect::<Vec<_>>(), vec![key(1)]);
    }

    #[test]
    fn a_full_queue_drops_touches_and_lets_them_be_retried() {
        let (touches, receiver) = Touches::new();
        for n in 0..=u16::MAX {
            touches.touch(&CacheKey::from_parts(&[&n.to_le_bytes()]));
        }
        assert_eq!(receiver.try_iter().count(), TOUCH_QUEUE);
        // The dropped keys were not marked queued: once there is room they get in.
        let late = CacheKey::from_parts(&[&u16::MAX.to_le_bytes()]);
        touches.touch(&late);
        assert_eq!(receiver.try_iter().collect::<Vec<_>>(), vec![late]);
    }
}
