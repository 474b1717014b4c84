//! Images made from one host executable, without a registry or a Dockerfile.
//!
//! Edge hosts often cannot reach a registry, and tests must not need one; yet the agent must
//! run its own helpers (and tests need something to run) as containers. The image is built
//! here as a plain root file system tar — the executable, the shared libraries `ldd` says it
//! needs at the paths the loader will look for them, and the few files a process expects in
//! `/etc` — and handed to the Engine API's import (`docker import`). The SHA-256 of the
//! executable is stored as a label, so a second import of the same bytes is one inspection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::docker::DockerDriver;
use crate::{Error, Result};

/// The label carrying the SHA-256 of the executable an image was made from.
pub const DIGEST_LABEL: &str = "io.atoll.image-digest";

/// Where the executable lives inside the image.
const BIN_DIR: &str = "/usr/local/bin";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Makes image `tag` run `exe` as its entrypoint, unless `tag` already holds an image made from
/// the same executable bytes.
///
/// The libraries are those of this host, found by `ldd`; a statically linked executable needs
/// none. Only the executable's bytes are compared: an image made before the host's libraries
/// were upgraded keeps the old libraries until the executable changes or the image is removed.
pub async fn import_executable_image(docker: &DockerDriver, exe: &Path, tag: &str) -> Result<()> {
    let name = exe
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| {
            Error::Runtime(format!(
                "importing image {tag}: {} does not name an executable file",
                exe.display()
            ))
        })?
        .to_string();
    // The name goes into a JSON array in the ENTRYPOINT change; keep it to plain characters.
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
    {
        return Err(Error::Runtime(format!(
            "importing image {tag}: executable name {name:?} may only hold letters, digits and \
             . _ - +; copy or link it under a plainer name"
        )));
    }
    let bytes = tokio::fs::read(exe).await.map_err(|e| {
        Error::Runtime(format!(
            "importing image {tag}: cannot read {}: {e}",
            exe.display()
        ))
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if docker.image_label(tag, DIGEST_LABEL).await?.as_deref() == Some(digest.as_str()) {
        return Ok(());
    }
    let previous = docker.image_id(tag).await?;

    let libraries = shared_libraries(exe).await?;
    let rootfs = tokio::task::spawn_blocking(move || rootfs_tar(&name, bytes, &libraries))
        .await
        .map_err(|e| Error::Runtime(format!("importing image {tag}: building the tar: {e}")))?
        .map_err(|e| Error::Runtime(format!("importing image {tag}: {e}")))?;

    let entrypoint = format!("{BIN_DIR}/{}", rootfs.entrypoint_name);
    let changes = vec![
        format!("ENTRYPOINT [\"{entrypoint}\"]"),
        format!("LABEL {DIGEST_LABEL}={digest}"),
    ];
    docker.import_rootfs(rootfs.tar, tag, changes).await?;

    // The image the tag pointed to is now dangling; drop it unless a container still uses it.
    if let Some(previous) = previous
        && docker.image_id(tag).await?.as_deref() != Some(previous.as_str())
    {
        docker.remove_unused_image(&previous).await;
    }
    Ok(())
}

/// A built root file system.
#[derive(Debug)]
struct Rootfs {
    tar: Vec<u8>,
    entrypoint_name: String,
}

/// The absolute paths of the shared libraries and loader that `exe` needs, as `ldd` prints
/// them; empty for a statically linked executable.
async fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let output = tokio::process::Command::new("ldd")
        .arg(exe)
        .output()
        .await
        .map_err(|e| {
            Error::Runtime(format!(
                "cannot run ldd to find the libraries of {}: {e}; install it (Debian: libc-bin)",
                exe.display()
            ))
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if is_static(&stdout) || is_static(&stderr) {
            return Ok(Vec::new());
        }
        return Err(Error::Runtime(format!(
            "ldd {} failed: {}",
            exe.display(),
            stderr.trim()
        )));
    }
    parse_ldd(&stdout).map_err(|library| {
        Error::Runtime(format!(
            "{} needs {library}, which is not installed on this host",
            exe.display()
        ))
    })
}

fn is_static(ldd_output: &str) -> bool {
    ldd_output.contains("not a dynamic executable")
        || ldd_output.contains("statically linked")
        || ldd_output.contains("Not a valid dynamic program")
}

/// The absolute paths in `ldd` output, or the first library it could not find.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, or the loader alone:
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`. The vDSO has no path and no file.
        let target = match line.split_once("=>") {
            Some((library, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    return Err(library.trim().to_string());
                }
                target
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// What goes at one path of the image.
#[derive(Debug)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, contents: Vec<u8> },
}

/// The tar of the root file system: the executable, each library at the path `ldd` printed
/// and at the path its symbolic links resolve to (so either name finds it), and `/etc`, `/tmp`.
fn rootfs_tar(name: &str, exe: Vec<u8>, libraries: &[PathBuf]) -> std::io::Result<Rootfs> {
    use std::os::unix::fs::PermissionsExt;

    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    add_file(&mut entries, Path::new(BIN_DIR).join(name), 0o755, exe);
    for library in libraries {
        let contents = std::fs::read(library).map_err(|e| annotate(e, library))?;
        let mode = std::fs::metadata(library)
            .map_err(|e| annotate(e, library))?
            .permissions()
            .mode()
            & 0o7777;
        let resolved = std::fs::canonicalize(library).map_err(|e| annotate(e, library))?;
        if resolved != *library {
            add_file(&mut entries, resolved, mode, contents.clone());
        }
        add_file(&mut entries, library.clone(), mode, contents);
    }
    add_file(&mut entries, "/etc/passwd".into(), 0o644, PASSWD.into());
    add_file(&mut entries, "/etc/group".into(), 0o644, GROUP.into());
    add_file(&mut entries, "/etc/hosts".into(), 0o644, HOSTS.into());
    entries.insert("/tmp".into(), Entry::Dir { mode: 0o1777 });

    let mut builder = tar::Builder::new(Vec::new());
    // BTreeMap order puts every directory before what it contains.
    for (path, entry) in &entries {
        let relative = path.strip_prefix("/").unwrap_or(path);
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match entry {
            Entry::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, relative, std::io::empty())?;
            }
            Entry::File { mode, contents } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(contents.len() as u64);
                builder.append_data(&mut header, relative, contents.as_slice())?;
            }
        }
    }
    Ok(Rootfs {
        tar: builder.into_inner()?,
        entrypoint_name: name.to_string(),
    })
}

/// Adds a file and, as plain directories, each of its parents not yet there.
fn add_file(entries: &mut BTreeMap<PathBuf, Entry>, path: PathBuf, mode: u32, contents: Vec<u8>) {
    for parent in path.ancestors().skip(1) {
        if parent != Path::new("/") && !parent.as_os_str().is_empty() {
            entries
                .entry(parent.to_path_buf())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
    }
    entries.insert(path, Entry::File { mode, contents });
}

fn annotate(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn ldd_output_yields_libraries_and_loader() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                      \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(output).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn ldd_missing_library_is_named() {
        let output = "\tlibfoo.so.1 => not found\n";
        assert_eq!(parse_ldd(output).unwrap_err(), "libfoo.so.1");
    }

    #[test]
    fn static_executables_are_recognised() {
        assert!(is_static("\tnot a dynamic executable\n"));
        assert!(is_static("\tstatically linked\n"));
        assert!(!is_static("ldd: ./x: No such file or directory"));
    }

    #[test]
    fn rootfs_holds_exe_etc_tmp_and_parents_first() {
        let rootfs = rootfs_tar("tool", b"#!exe".to_vec(), &[]).unwrap();
        assert_eq!(rootfs.entrypoint_name, "tool");
        let mut archive = tar::Archive::new(rootfs.tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut contents = String::new();
            entry.read_to_string(&mut contents).unwrap();
            seen.push((path, mode, contents));
        }
        let paths: Vec<&str> = seen.iter().map(|(path, ..)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc",
                "etc/group",
                "etc/hosts",
                "etc/passwd",
                "tmp",
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/tool",
            ]
        );
        let find = |wanted: &str| seen.iter().find(|(path, ..)| path == wanted).unwrap();
        assert_eq!(find("tmp").1, 0o1777);
        assert_eq!(find("usr/local/bin/tool").1, 0o755);
        assert_eq!(find("usr/local/bin/tool").2, "#!exe");
        assert!(find("etc/passwd").2.contains("nobody:x:65534"));
    }

    #[test]
    fn libraries_are_stored_at_printed_and_resolved_paths() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("libx.so.1"), b"lib").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let printed = link.join("libx.so.1");
        let rootfs = rootfs_tar("tool", Vec::new(), std::slice::from_ref(&printed)).unwrap();
        let mut archive = tar::Archive::new(rootfs.tar.as_slice());
        let files: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.path().unwrap().to_string_lossy().into_owned(),
                    entry.header().entry_type(),
                )
            })
            .collect();
        let resolved = std::fs::canonicalize(&printed).unwrap();
        for path in [&printed, &resolved] {
            let relative = path
                .strip_prefix("/")
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(
                files.contains(&(relative.clone(), tar::EntryType::Regular)),
                "{relative} missing from {files:?}"
            );
        }
    }
}
