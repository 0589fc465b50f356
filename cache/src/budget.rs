//! The disk budget recorded in the cache directory, so every process sharing it (`serve`, `warm`) evicts to the
//! same limit instead of each to its own.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Name of the file, directly under the cache root, holding the budget in bytes as decimal text.
pub const BUDGET_FILE: &str = "budget";

/// Name of the (empty) file, directly under the cache root, that a running `serve` holds locked: how a second
/// `serve` tells a restart (nobody holds it: the new budget replaces the record) from a process running beside
/// another (somebody does: a different budget is refused).
pub const OWNER_LOCK_FILE: &str = "owner.lock";

/// The lock on `OWNER_LOCK_FILE` of one cache directory, held while its owner runs; released when dropped (or
/// when the process dies, by the kernel).
#[derive(Debug)]
pub struct OwnerLock {
    _file: fs::File,
}

/// Takes the owner lock of `root` (created if missing), or `Ok(None)` when another running process holds it.
pub fn try_own(root: &Path) -> io::Result<Option<OwnerLock>> {
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(root.join(OWNER_LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(OwnerLock { _file: file })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(error)) => Err(error),
    }
}

/// Whether a running process (a `serve`) owns `root` now. A directory that does not exist yet has no owner.
pub fn has_live_owner(root: &Path) -> bool {
    matches!(try_own(root), Ok(None))
}

/// The budget recorded in `root`, if there is a readable one.
pub fn recorded(root: &Path) -> Option<u64> {
    fs::read_to_string(root.join(BUDGET_FILE)).ok()?.trim().parse().ok()
}

/// Records `bytes` as the budget of `root` (temp file and rename, so a reader never sees half a number).
pub fn record(root: &Path, bytes: u64) -> io::Result<()> {
    if recorded(root) == Some(bytes) {
        return Ok(());
    }
    fs::create_dir_all(root)?;
    let tmp = root.join(format!("{BUDGET_FILE}.{}.tmp", std::process::id()));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(format!("{bytes}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, root.join(BUDGET_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded(dir.path()), None);
        record(dir.path(), 8 << 20).unwrap();
        assert_eq!(recorded(dir.path()), Some(8 << 20));
        fs::write(dir.path().join(BUDGET_FILE), "junk").unwrap();
        assert_eq!(recorded(dir.path()), None);
    }

    #[test]
    fn one_owner_at_a_time_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_live_owner(&dir.path().join("missing")));
        assert!(!has_live_owner(dir.path()));
        let owner = try_own(dir.path()).unwrap().expect("nobody owns it yet");
        assert!(has_live_owner(dir.path()));
        assert!(try_own(dir.path()).unwrap().is_none());
        drop(owner);
        assert!(!has_live_owner(dir.path()));
    }
}
