//! What the shared tier counts, for `/metrics`: plain atomics, bumped where each outcome is decided.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares an outcome enum with its label values, in one list.
macro_rules! outcomes {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every outcome, in label order.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The metric label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

outcomes!(
    /// How a lookup in the shared store ended.
    LookupResult {
        /// A verified entry.
        Hit => "hit",
        /// No object.
        Miss => "miss",
        /// An object that failed its checks (deleted, not served).
        Corrupt => "corrupt",
        /// The store failed or timed out.
        Error => "error",
        /// Not asked: the breaker is open.
        Skipped => "skipped",
    }
);

outcomes!(
    /// How a queued write ended.
    WriteResult {
        /// Stored.
        Ok => "ok",
        /// The store failed or timed out.
        Error => "error",
        /// Never sent: the queue was full, or the breaker open.
        Dropped => "dropped",
    }
);

outcomes!(
    /// How a fill lease was claimed.
    LeaseResult {
        /// This node fetches.
        Won => "won",
        /// Another node fetches; this one waited for its entry.
        Lost => "lost",
        /// An expired lease of another node was taken over.
        TakenOver => "taken_over",
        /// No lease: the store lacks create-only writes, or failed (the fill went ahead per node).
        Unsupported => "unsupported",
    }
);

/// The shared tier's counters.
#[derive(Debug, Default)]
pub struct SharedStats {
    lookups: [AtomicU64; 5],
    writes: [AtomicU64; 3],
    leases: [AtomicU64; 4],
    purges_applied: AtomicU64,
}

impl SharedStats {
    pub(super) fn looked_up(&self, result: LookupResult) {
        self.lookups[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn wrote(&self, result: WriteResult) {
        self.writes[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn leased(&self, result: LeaseResult) {
        self.leases[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a purge record of another node applied to the local tiers.
    pub fn purge_applied(&self) {
        self.purges_applied.fetch_add(1, Ordering::Relaxed);
    }

    /// Lookups that ended so.
    pub fn lookups(&self, result: LookupResult) -> u64 {
        self.lookups[result as usize].load(Ordering::Relaxed)
    }

    /// Writes that ended so.
    pub fn writes(&self, result: WriteResult) -> u64 {
        self.writes[result as usize].load(Ordering::Relaxed)
    }

    /// Lease claims that ended so.
    pub fn leases(&self, result: LeaseResult) -> u64 {
        self.leases[result as usize].load(Ordering::Relaxed)
    }

    /// Purge records of other nodes applied here.
    pub fn purges_applied(&self) -> u64 {
        self.purges_applied.load(Ordering::Relaxed)
    }
}
