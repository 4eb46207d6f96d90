//! The data layout a data directory was created with. Changing the shard
//! count (or the ring) would move users to shards that do not hold their
//! state, so a node refuses to start on a mismatch.

use anyhow::{Context as _, bail};
use std::path::Path;

/// Records the layout on first start; afterwards refuses any other.
pub fn check(data_dir: &Path, shards: u32) -> anyhow::Result<()> {
    let path = data_dir.join("layout.toml");
    let want = format!("shards = {shards}\nring_version = {}\n", iris_router::RING_VERSION);
    match std::fs::read_to_string(&path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => bail!(
            "{} was created with a different layout:\n{have}this config asks for:\n{want}core.shards cannot change for existing data",
            data_dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            std::fs::write(&path, want).with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_start_records_the_shard_count_and_later_ones_keep_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        super::check(&dir, 8).unwrap();
        super::check(&dir, 8).unwrap();
        let e = super::check(&dir, 16).unwrap_err().to_string();
        assert!(e.contains("core.shards cannot change"), "{e}");
    }
}
