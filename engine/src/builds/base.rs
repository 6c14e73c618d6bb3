//! Base images as users write them, mapped to this host's built-in templates.
//!
//! The SDKs name bases the way container images are named (`debian:12`, `python:3.11`,
//! `node:20`, E2B's `e2bdev/base`, Daytona's `debian_slim`). This host builds every template on
//! Debian 12 (bookworm): those names map to the built-in `base` template (Debian 12 with Python
//! 3.11, pip and venv, Node.js 18 and npm, git, curl), and the build log says so, naming any
//! runtime version that differs from the one asked for. Other images (Ubuntu, Alpine, a private
//! registry's) would need an OCI pull, which this host does not do yet: they are refused with
//! an error that names the image.

use crate::error::{Error, Result};

/// The built-in template every image name below maps to.
const DEBIAN_BASE: &str = "base";
/// Python in Debian 12.
const PYTHON_VERSION: &str = "3.11";
/// Node.js in Debian 12.
const NODE_VERSION: &str = "18";

/// What a base image name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBase {
    /// The built-in template to build on.
    pub template: String,
    /// A line for the build log: which base was used and how it differs from what was asked.
    pub note: String,
}

/// Resolves `image` (see the module docs); `builtin` are the host's built-in template names,
/// which may be named directly.
pub fn resolve_base(image: &str, builtin: &[String]) -> Result<ResolvedBase> {
    let image = image.trim();
    if builtin.iter().any(|t| t == image) {
        return Ok(ResolvedBase {
            template: image.to_string(),
            note: format!("base: the built-in template {image:?}"),
        });
    }
    // `docker.io/library/python:3.11-slim` -> (`python`, `3.11-slim`).
    let unprefixed = image
        .trim_start_matches("docker.io/")
        .trim_start_matches("library/");
    let (repo, tag) = match unprefixed.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (unprefixed, "latest"),
    };
    let debian = |asked: &str| ResolvedBase {
        template: DEBIAN_BASE.to_string(),
        note: format!(
            "base: {image} -> Debian 12 (bookworm), the built-in template {DEBIAN_BASE:?}{asked}"
        ),
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
            if ok {
                Ok(debian(""))
            } else {
                Err(unresolvable(
                    image,
                    "only Debian 12 (bookworm) is available",
                ))
            }
        }
        "python" => Ok(debian(&version("Python", PYTHON_VERSION))),
        "node" => Ok(debian(&version("Node.js", NODE_VERSION))),
        "e2bdev/base" | "e2bdev/code-interpreter" => Ok(debian("")),
        _ => Err(unresolvable(
            image,
            "pulling images from an OCI registry is not supported on this host yet",
        )),
    }
}

fn unresolvable(image: &str, why: &str) -> Error {
    Error::InvalidRequest(format!(
        "base image {image:?} cannot be resolved: {why}; bases: debian:12, debian_slim, \
         python:3.11, node:18, e2bdev/base, or a template's name"
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
            let r = resolve_base(image, &builtin()).unwrap_or_else(|e| panic!("{image}: {e}"));
            assert_eq!(r.template, "base", "{image}");
            assert!(r.note.contains(image), "{image}: {}", r.note);
        }
        let r = resolve_base("python:3.12", &builtin()).unwrap();
        assert!(r.note.contains("asked for 3.12"), "{}", r.note);
        let r = resolve_base("node:20", &builtin()).unwrap();
        assert!(r.note.contains("Node.js 18 (asked for 20"), "{}", r.note);
        assert!(
            !resolve_base("python:3.11", &builtin())
                .unwrap()
                .note
                .contains("asked")
        );
    }

    #[test]
    fn builtin_names_resolve_to_themselves() {
        let r = resolve_base("code-interpreter-v1", &builtin()).unwrap();
        assert_eq!(r.template, "code-interpreter-v1");
    }

    #[test]
    fn other_images_are_refused_by_name() {
        for image in [
            "ubuntu:24.04",
            "alpine:3.20",
            "debian:11",
            "registry.local/app:1",
        ] {
            let e = resolve_base(image, &builtin()).unwrap_err().to_string();
            assert!(e.contains(image), "{e}");
        }
    }
}
