//! The disk budget recorded in the cache directory, so every process sharing it (`serve`, `warm`) evicts to the
//! same limit instead of each to its own.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Name of the file, directly under the cache root, holding the budget in bytes as decimal text.
pub const BUDGET_FILE: &str = "budget";

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
}
