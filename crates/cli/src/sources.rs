//! Reading `-f FILE|DIR|-` into named sources: a directory is read recursively, its `.yaml`,
//! `.yml` and `.json` files in name order, so applying a folder is repeatable.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use atoll_spec::Source;

use crate::error::{CliError, Result};

pub fn read(paths: &[PathBuf]) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::user(format!("standard input: {e}")))?;
            sources.push(Source {
                name: "<stdin>".into(),
                text,
            });
            continue;
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| CliError::user(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files)?;
            if files.is_empty() {
                return Err(CliError::user(format!(
                    "{}: no .yaml, .yml or .json files in this folder",
                    path.display()
                )));
            }
            for file in files {
                sources.push(read_file(&file)?);
            }
        } else {
            sources.push(read_file(path)?);
        }
    }
    Ok(sources)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::user(format!("{}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Source> {
    let bytes =
        std::fs::read(path).map_err(|e| CliError::user(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::user(format!("{}: not UTF-8 text", path.display())))?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}
