//! Writing the control plane's files: atomically, and private ones readable by the owner only.
//! The binary uses `private_dir` for the agent's data folder too, so both keep one rule.

use std::io::Write as _;
use std::path::Path;

/// Writes `contents` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written file; `private` files get mode 0600 before any byte is written.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Makes `dir` (and any missing parent) a folder only its owner can enter: 0700. A folder that
/// exists with a wider mode is tightened, and the log says so; it holds keys and the database.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};

    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        tracing::warn!(path = %dir.display(), "data folder was mode {mode:04o}: tightened to 0700");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Issue 12, item 6: the data folder was 0755.
    #[test]
    fn the_data_folder_was_open_to_everyone() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/b");
        super::private_dir(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        let wide = tmp.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(wide.join("kept"), "x").unwrap();
        super::private_dir(&wide).unwrap();
        assert_eq!(mode(&wide), 0o700);
        assert!(wide.join("kept").exists());
    }
}
