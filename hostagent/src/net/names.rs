//! Domain names in egress rules: `example.com` (that name only) or `*.example.com` (every name
//! under it, not `example.com` itself), matched case-insensitively and without a trailing dot.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name DNS carries (RFC 1035, without the trailing dot).
const MAX_NAME: usize = 253;
/// Longest label.
const MAX_LABEL: usize = 63;

/// One name entry of an egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamePattern {
    /// The name (lowercase, no trailing dot); for a wildcard, the part after `*.`.
    name: String,
    /// `*.name`: names under `name`.
    wildcard: bool,
}

/// Why an entry is not a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(String);

impl NamePattern {
    /// Parses `example.com` or `*.example.com`. A name needs at least two labels and a letter
    /// (so addresses never parse as names); labels are letters, digits, `-` and `_`.
    pub fn parse(entry: &str) -> Result<NamePattern, InvalidName> {
        let entry = entry.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, entry.clone()),
        };
        let bad = |why: &str| {
            Err(InvalidName(format!(
                "{entry:?} is not a domain name: {why}"
            )))
        };
        if name.is_empty() || name.len() > MAX_NAME {
            return bad("empty or longer than 253 characters");
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.len() < 2 {
            return bad("a name needs at least two labels (`example.com`)");
        }
        for label in &labels {
            if label.is_empty() || label.len() > MAX_LABEL {
                return bad("every label has 1 to 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad("labels hold letters, digits, `-` and `_` only (`*.` only in front)");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return bad("a label neither starts nor ends with `-`");
            }
        }
        if !labels[labels.len() - 1]
            .bytes()
            .any(|b| b.is_ascii_alphabetic())
        {
            return bad("the last label has a letter (an address is not a name)");
        }
        Ok(NamePattern { name, wildcard })
    }

    /// Whether `name` (any case, trailing dot or not) is this entry's name or, for a wildcard, a
    /// name under it.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        if self.wildcard {
            name.len() > self.name.len() + 1
                && name[name.len() - self.name.len()..].eq_ignore_ascii_case(&self.name)
                && name.as_bytes()[name.len() - self.name.len() - 1] == b'.'
        } else {
            name.eq_ignore_ascii_case(&self.name)
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl Serialize for NamePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NamePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NamePattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether any of `patterns` matches `name`.
pub fn any_matches(patterns: &[NamePattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_names_match_as_documented() {
        let exact = NamePattern::parse("API.Example.com.").unwrap();
        assert_eq!(exact.to_string(), "api.example.com");
        assert!(exact.matches("api.example.com"));
        assert!(exact.matches("API.EXAMPLE.COM."));
        assert!(!exact.matches("x.api.example.com"));
        assert!(!exact.matches("example.com"));

        let wild = NamePattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.Example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        assert!(!wild.matches(".example.com"));
        assert_eq!(
            serde_json::to_string(&vec![wild.clone(), exact]).unwrap(),
            r#"["*.example.com","api.example.com"]"#
        );
        let back: NamePattern = serde_json::from_str(r#""*.example.com""#).unwrap();
        assert_eq!(back, wild);
    }

    #[test]
    fn addresses_and_garbage_are_not_names() {
        for bad in [
            "",
            "localhost",
            "10.0.0.1",
            "1.2.3.4/24",
            "a..b",
            "*.com",
            "a.*.com",
            "exa mple.com",
            "-a.com",
            "a.com/path",
            "2001:db8::1",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(NamePattern::parse("_acme.example.org").is_ok());
        assert!(NamePattern::parse("xn--bcher-kva.example").is_ok());
    }
}
