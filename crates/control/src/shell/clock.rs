//! The one place the control plane reads the wall clock.

use std::time::SystemTime;

/// Now, as an RFC 3339 UTC timestamp with seconds.
#[allow(clippy::disallowed_methods)]
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Now, in milliseconds since the epoch (the rollout machine's clock).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now.
#[allow(clippy::disallowed_methods)]
pub fn now() -> SystemTime {
    SystemTime::now()
}
