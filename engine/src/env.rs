//! What every front end assumes about a sandbox's environment: the user commands run as and its
//! home directory (the built-in templates create them), and the one rule for environment
//! variable names, applied wherever variables come in (create, exec, sessions, code contexts,
//! every front end).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The user commands and file operations run as when the caller names none.
pub const DEFAULT_USER: &str = "user";

/// [`DEFAULT_USER`]'s home directory, the default working directory.
pub const DEFAULT_HOME: &str = "/home/user";

/// Longest environment variable name accepted.
const MAX_NAME_LEN: usize = 256;

/// An environment variable name must be a portable shell name, `^[A-Za-z_][A-Za-z0-9_]*$`, of at
/// most 256 bytes: a name a shell can refer to, and what Daytona's daemon accepts.
pub fn check_env_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() <= MAX_NAME_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "invalid environment variable name {name:?} (letters, digits and _, not starting with a digit)"
        )))
    }
}

/// [`check_env_name`] for every name of `env`.
pub fn check_env(env: &BTreeMap<String, String>) -> Result<()> {
    env.keys().try_for_each(|k| check_env_name(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_portable_shell_names() {
        for good in ["A_1", "_b", "PATH", "x"] {
            assert!(check_env_name(good).is_ok(), "{good:?}");
        }
        let long = "A".repeat(257);
        for bad in [
            "1A",
            "A-B",
            "",
            "A=B",
            "\u{e9}",
            "A B",
            "A\0",
            long.as_str(),
        ] {
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
    }
}
