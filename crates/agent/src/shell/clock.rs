//! The one place the agent reads the wall clock.

use std::time::SystemTime;

#[allow(clippy::disallowed_methods)]
pub fn now() -> SystemTime {
    SystemTime::now()
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(now()).to_string()
}

pub fn now_ms() -> u64 {
    millis_since_epoch(now())
}

pub fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
