//! The rules for names, label keys and label values, shared by every resource.

/// A resource, service or volume name is a DNS label, so it can become a hostname, a container
/// name part and a path segment without escaping.
pub fn check_name(name: &str) -> Result<(), String> {
    const HINT: &str = "names are DNS labels: 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit";
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name `{name}`: {HINT}"))
    }
}

/// Label keys may carry a prefix (`example.com/role`), as selectors read them bare.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key.as_bytes()[0].is_ascii_alphanumeric()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid label key `{key}`: 1 to 128 letters, digits, '.', '_', '-' or '/', starting with a letter or digit"
        ))
    }
}

pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.chars().count() > 256 || value.chars().any(char::is_control) {
        Err("invalid label value: at most 256 characters, no control characters".into())
    } else {
        Ok(())
    }
}

/// Environment variable names as POSIX shells accept them.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid environment variable name `{name}`: letters, digits and '_', not starting with a digit"
        ))
    }
}

/// The keys of a secret: each becomes a file name at the edge.
pub fn check_secret_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid secret key `{key}`: letters, digits, '.', '_' and '-' (it names a file)"
        ))
    }
}

/// Application versions: free-form but safe in a label value and a file name.
pub fn check_version(version: &str) -> Result<(), String> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid version `{version}`: 1 to 128 letters, digits, '.', '_', '-' or '+'"
        ))
    }
}

/// Text that reaches the edge as a C string (an environment entry, an argument, an image
/// reference): the kernel and the container runtime end such a string at its first NUL byte, so
/// one written here would be cut or refused at every site, for ever. `what` names the field's
/// role in the message.
pub fn check_no_nul(text: &str, what: &str) -> Result<(), String> {
    match text.chars().position(|c| c == '\0') {
        None => Ok(()),
        Some(at) => Err(format!(
            "contains a NUL byte at character {}: {what} cannot carry one; remove it",
            at + 1
        )),
    }
}

/// An absolute path inside a container, without `..` or empty segments.
pub fn check_container_path(path: &str) -> Result<(), String> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && path.len() <= 4096
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid path `{path}`: an absolute path in the container, without `.`, `..` or `//`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("store-0042").is_ok());
        assert!(check_name("a").is_ok());
        for bad in ["", "-a", "a-", "Store", "a_b", "a.b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_nul_byte_is_refused_with_its_position() {
        assert!(check_no_nul("plain text", "an env value").is_ok());
        let e = check_no_nul("ab\0c", "an env value").unwrap_err();
        assert!(e.contains("character 3"), "{e}");
        assert!(e.contains("an env value"), "{e}");
    }

    #[test]
    fn labels_and_paths() {
        assert!(check_label_key("example.com/role").is_ok());
        assert!(check_label_key("/x").is_err());
        assert!(check_label_value("a\nb").is_err());
        assert!(check_env_name("STORE_ID").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_container_path("/etc/pos/config.toml").is_ok());
        for bad in ["etc", "/", "/a/../b", "/a//b", "/a/"] {
            assert!(check_container_path(bad).is_err(), "{bad}");
        }
    }
}
