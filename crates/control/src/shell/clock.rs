//! The one place the control plane reads the wall clock.

use std::time::SystemTime;

/// Now, as an RFC 3339 UTC timestamp with seconds.
#[allow(clippy::disallowed_methods)]
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
