//! Mirage's cache tiers: a byte-weighted memory tier over a crash-safe, SHA-256-keyed disk
//! tier, behind a tiered front, and a coalescer that runs one fill per key at a time. Knows
//! nothing of HTTP.

pub mod budget;
pub mod disk;
pub mod evict;
pub mod health;
pub mod inspect;
pub mod key;
pub mod memory;
pub mod meta;
pub mod shared;
pub mod tiered;

mod coalesce;
mod touch;

pub use coalesce::{Coalescer, FillError};
pub use disk::{DiskError, DiskTier};
pub use key::CacheKey;
pub use memory::MemoryTier;
pub use meta::{Entry, EntryKind, EntryMeta, FreshnessInputs, Validators};
pub use tiered::{DiskOptions, FillClaim, Lookup, PurgeGeneration, PurgeOutcome, Tier, TieredCache};
