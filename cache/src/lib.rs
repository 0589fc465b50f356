//! Mirage's cache tiers: a byte-weighted memory tier over a crash-safe, SHA-256-keyed disk
//! tier, behind a tiered front that coalesces concurrent fills. Knows nothing of HTTP.

pub mod disk;
pub mod evict;
pub mod key;
pub mod memory;
pub mod meta;
pub mod tiered;

mod coalesce;

pub use disk::{DiskError, DiskTier};
pub use key::CacheKey;
pub use memory::MemoryTier;
pub use meta::{Entry, EntryKind, EntryMeta};
pub use tiered::{FillError, Lookup, Tier, TieredCache};
