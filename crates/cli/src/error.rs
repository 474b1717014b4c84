//! CLI errors and the exit codes they map to, in one place.

use std::fmt;

use atoll_spec::Diagnostic;

/// 0 success; 1 the user's input or request was refused; 2 the control plane could not be
/// reached or failed; 3 (the agent only) the host was detached from its site, and the agent
/// removed what atoll ran there: starting it again would only be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    User = 1,
    Server = 2,
    Detached = 3,
}

#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl CliError {
    pub fn user(message: impl Into<String>) -> CliError {
        CliError {
            exit: Exit::User,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    pub fn server(message: impl Into<String>) -> CliError {
        CliError {
            exit: Exit::Server,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    pub fn code(&self) -> i32 {
        self.exit as i32
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        write!(f, "error: {}", self.message)
    }
}

impl std::error::Error for CliError {}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_from_the_server_with_escape_sequences_is_printed_escaped() {
        let error = CliError {
            exit: Exit::User,
            message: "site \x1b]0;pwned\x07\x1b[2J does not exist".into(),
            diagnostics: Vec::new(),
        };
        assert_eq!(
            crate::output::terminal_safe(&error.to_string()),
            "error: site \\x1b]0;pwned\\x07\\x1b[2J does not exist"
        );
    }
}
