//! Identifiers: sandbox ids and the validation of names that end up in paths.
//!
//! Sandbox ids are 20 lowercase alphanumerics. E2B routes on `{port}-{id}.{domain}`, so ids must never
//! contain `-` or `.`; and ids become directory names under the data dir, so anything that is not
//! exactly this shape is rejected before it gets near a path.

use rand::Rng;

use crate::error::{Error, Result};

const ID_LEN: usize = 20;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh random sandbox id.
pub fn new_sandbox_id() -> String {
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks that `id` could be a sandbox id; anything else cannot exist, so it is "not found".
pub fn check_sandbox_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::SandboxNotFound(id.to_string()))
    }
}

/// True for strings of the sandbox id shape.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Template names: lowercase alphanumerics, `-`, `_` and `.`, not starting with a dot.
pub fn check_template_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::TemplateNotFound(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_routable_shape() {
        for _ in 0..100 {
            let id = new_sandbox_id();
            assert_eq!(id.len(), 20);
            assert!(is_valid_id(&id));
        }
        for bad in ["", "../etc", "ABC", "a-b", "a.b", "a/b", &"a".repeat(65)] {
            assert!(check_sandbox_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_names_cannot_escape() {
        assert!(check_template_name("code-interpreter-v1").is_ok());
        for bad in ["..", "../x", "a/b", ".hidden", "", "UPPER"] {
            assert!(check_template_name(bad).is_err(), "{bad}");
        }
    }
}
