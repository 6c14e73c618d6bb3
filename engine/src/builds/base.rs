//! Base images as users write them: the host's built-in Debian templates, or an image pulled
//! from its OCI registry.
//!
//! The SDKs name bases the way container images are named (`debian:12`, `python:3.11`,
//! `node:20`, E2B's `e2bdev/base`, Daytona's `debian_slim`). Those names map to the built-in
//! `base` template (Debian 12 with Python 3.11, pip and venv, Node.js 18 and npm, git, curl),
//! which is already on the host and ready to boot, and the build log says so, naming any
//! runtime version that differs from the one asked for. Every other image (`ubuntu:24.04`,
//! `alpine:3.20`, `debian:11`, `registry.example.com/team/app:1`) is pulled from its registry
//! by the host and booted with the `base` template's kernel and guest agent
//! ([`platinum_hostagent::image::oci`]); a name that is no image reference is refused here.

use crate::error::{Error, Result};

/// The built-in template every image name below maps to.
const DEBIAN_BASE: &str = "base";
/// Python in Debian 12.
const PYTHON_VERSION: &str = "3.11";
/// Node.js in Debian 12.
const NODE_VERSION: &str = "18";

/// The built-in template whose kernel and guest agent boot images pulled from registries.
pub const PULLED_IMAGE_TEMPLATE: &str = DEBIAN_BASE;

/// What a base image name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A built-in template.
    Builtin(ResolvedBase),
    /// An image to pull: its full reference (`docker.io/library/ubuntu:24.04`).
    Registry(String),
}

/// A built-in template a base image name maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBase {
    /// The built-in template to build on.
    pub template: String,
    /// A line for the build log: which base was used and how it differs from what was asked.
    pub note: String,
}

/// Resolves `image` (see the module docs); `builtin` are the host's built-in template names,
/// which may be named directly.
pub fn resolve_base(image: &str, builtin: &[String]) -> Result<Base> {
    let image = image.trim();
    if builtin.iter().any(|t| t == image) {
        return Ok(Base::Builtin(ResolvedBase {
            template: image.to_string(),
            note: format!("base: the built-in template {image:?}"),
        }));
    }
    let pull = || {
        platinum_hostagent::image::oci::parse_reference(image)
            .map(Base::Registry)
            .map_err(|e| unresolvable(image, &e.to_string()))
    };
    // `docker.io/library/python:3.11-slim` -> (`python`, `3.11-slim`).
    let unprefixed = image
        .trim_start_matches("docker.io/")
        .trim_start_matches("library/");
    let (repo, tag) = match unprefixed.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (unprefixed, "latest"),
    };
    let debian = |asked: &str| {
        Base::Builtin(ResolvedBase {
            template: DEBIAN_BASE.to_string(),
            note: format!(
                "base: {image} -> Debian 12 (bookworm), the built-in template {DEBIAN_BASE:?}{asked}"
            ),
        })
    };
    let version = |what: &str, have: &str| {
        let asked = tag.split('-').next().unwrap_or(tag);
        let differs = !matches!(asked, "latest" | "lts" | "slim" | "bookworm" | "3" | "")
            && !have.starts_with(asked)
            && !asked.starts_with(have);
        if differs {
            format!(
                " with {what} {have} (asked for {asked}: this host builds on Debian 12's {what})"
            )
        } else {
            format!(" with {what} {have}")
        }
    };
    match repo {
        "debian" | "debian_slim" | "debian-slim" => {
            let ok = matches!(
                tag,
                "latest"
                    | "12"
                    | "bookworm"
                    | "stable"
                    | "slim"
                    | "12-slim"
                    | "bookworm-slim"
                    | "stable-slim"
            ) || tag.starts_with("12.")
                || tag.starts_with("bookworm-");
            if ok { Ok(debian("")) } else { pull() }
        }
        "python" => Ok(debian(&version("Python", PYTHON_VERSION))),
        "node" => Ok(debian(&version("Node.js", NODE_VERSION))),
        "e2bdev/base" | "e2bdev/code-interpreter" => Ok(debian("")),
        _ => pull(),
    }
}

fn unresolvable(image: &str, why: &str) -> Error {
    Error::InvalidRequest(format!(
        "base image {image:?} cannot be resolved: {why}; bases: an image reference \
         (ubuntu:24.04, registry.example.com/team/app:1), debian:12, debian_slim, python:3.11, \
         node:18, e2bdev/base, or a template's name"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Vec<String> {
        vec!["base".into(), "code-interpreter-v1".into()]
    }

    #[test]
    fn debian_python_and_node_names_map_to_base() {
        for image in [
            "debian:12",
            "debian:bookworm",
            "debian_slim",
            "debian:stable-slim",
            "python:3.11",
            "python:3",
            "python:3.11-slim-bookworm",
            "docker.io/library/python:3.12",
            "node:18",
            "node:lts",
            "e2bdev/base",
            "e2bdev/base:latest",
        ] {
            let r = builtin_of(image);
            assert_eq!(r.template, "base", "{image}");
            assert!(r.note.contains(image), "{image}: {}", r.note);
        }
        let r = builtin_of("python:3.12");
        assert!(r.note.contains("asked for 3.12"), "{}", r.note);
        let r = builtin_of("node:20");
        assert!(r.note.contains("Node.js 18 (asked for 20"), "{}", r.note);
        assert!(!builtin_of("python:3.11").note.contains("asked"));
    }

    fn builtin_of(image: &str) -> ResolvedBase {
        match resolve_base(image, &builtin()) {
            Ok(Base::Builtin(r)) => r,
            other => panic!("{image}: {other:?}"),
        }
    }

    #[test]
    fn builtin_names_resolve_to_themselves() {
        assert_eq!(
            builtin_of("code-interpreter-v1").template,
            "code-interpreter-v1"
        );
    }

    #[test]
    fn other_images_are_pulled_and_garbage_is_refused_by_name() {
        for (image, full) in [
            ("ubuntu:24.04", "docker.io/library/ubuntu:24.04"),
            ("alpine", "docker.io/library/alpine:latest"),
            ("debian:11", "docker.io/library/debian:11"),
            ("registry.local:5000/app:1", "registry.local:5000/app:1"),
        ] {
            assert_eq!(
                resolve_base(image, &builtin()).unwrap(),
                Base::Registry(full.into()),
                "{image}"
            );
        }
        for image in ["Not An Image!", "a//b"] {
            let e = resolve_base(image, &builtin()).unwrap_err().to_string();
            assert!(e.contains(image), "{e}");
        }
    }
}
