//! Writing the agent's files atomically: a crash or power cut leaves the old file or the new
//! one, never half of either. Private files are created with mode 0600 before any byte is
//! written. A write that fails (a full disk) removes its temporary file, so a failing disk
//! does not also fill up with half-written copies.

use std::io::Write as _;
use std::path::Path;

pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = write_then_rename(&tmp, path, contents, mode);
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_then_rename(tmp: &Path, path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    let mut file = options.open(tmp)?;
    #[cfg(unix)]
    {
        // The mode given at creation is filtered by the umask; set it exactly.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)
}

/// An IO error in the words of the agent's reports: "no space left on device" for a full disk
/// (what a person at the control plane must read), the system's words otherwise.
pub fn describe(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return "no space left on device".to_owned();
    }
    let text = e.to_string();
    let mut chars = text.chars();
    chars.next().map_or(text.clone(), |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

/// Removes a file or a folder with everything in it; one that is not there is no problem.
pub fn remove_if_present(path: &Path) -> std::io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_said_in_plain_words() {
        let full = std::io::Error::from_raw_os_error(28);
        assert_eq!(describe(&full), "no space left on device");
        let denied = std::io::Error::from_raw_os_error(13);
        assert!(
            describe(&denied).starts_with("permission denied"),
            "{}",
            describe(&denied)
        );
    }
}
