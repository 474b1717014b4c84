//! Where the CLI finds the control plane: a config file written by `atoll login` (or
//! `atoll dev`), overridden field by field by `ATOLL_URL`, `ATOLL_TOKEN` and `ATOLL_CA_FILE`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: Option<String>,
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// `$ATOLL_CONFIG`, else `$XDG_CONFIG_HOME/atoll/config.json`, else `~/.config/atoll/config.json`.
pub fn path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ATOLL_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| CliError::user("cannot find a config folder: set ATOLL_CONFIG or HOME"))?;
    Ok(base.join("atoll").join("config.json"))
}

impl Config {
    /// The file's settings (if it exists) with the environment's on top.
    pub fn load() -> Result<Config> {
        let path = path()?;
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                CliError::user(format!(
                    "{}: {e}; fix it or run `atoll login` again",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(CliError::user(format!("{}: {e}", path.display()))),
        };
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(url) = var("ATOLL_URL") {
            config.url = Some(url);
        }
        if let Some(token) = var("ATOLL_TOKEN") {
            config.token = Some(token);
        }
        if let Some(ca) = var("ATOLL_CA_FILE") {
            config.ca_file = Some(PathBuf::from(ca));
        }
        Ok(config)
    }

    /// Writes the config readable by the owner only: it holds a token.
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail =
            |e: std::io::Error| CliError::user(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        use std::io::Write as _;
        let mut file = options.open(path).map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.write_all(b"\n").map_err(fail)
    }
}
