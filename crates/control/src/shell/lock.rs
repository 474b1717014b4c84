//! One control plane per data folder: the folder holds the store, the CA and the keys, and two
//! processes on it would split the fleet without a word (an apply through one never reaching
//! the agents connected to the other). The first takes an exclusive `flock` on `control.pid`
//! and writes its process id there; a second is refused at start, naming that process. The
//! kernel releases the lock when its holder exits however it ends, so a crash never leaves the
//! folder locked and a stale pid file is only a stale number.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

/// The lock file, in the data folder.
pub const LOCK_FILE: &str = "control.pid";

/// Held for as long as the control plane uses its data folder.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data folder {path} in use by process {pid}: another atoll control runs on it; stop it, or give this one a --data-dir of its own"
    )]
    InUse { path: String, pid: String },
    #[error("data folder {path}: cannot lock {LOCK_FILE}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Locks `dir` for this process, or says which process holds it.
pub fn lock(dir: &Path) -> Result<DataLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source: std::io::Error| LockError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            let mut pid = String::new();
            let _ = file.take(32).read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(LockError::InUse {
                path: dir.display().to_string(),
                pid: if pid.is_empty() { "(unknown)" } else { pid }.to_owned(),
            });
        }
        return Err(io(e.into()));
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(DataLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_is_refused_naming_the_holder_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let refused = lock(dir.path()).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("in use by process {}", std::process::id())),
            "{refused}"
        );
        drop(held);
        lock(dir.path()).unwrap();
    }
}
