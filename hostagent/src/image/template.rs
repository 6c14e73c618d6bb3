//! Templates: the recipes root filesystems are built from.
//!
//! A template names Debian packages to install on top of a minimal Debian 12 (bookworm), shell
//! commands to run as root inside the new system afterwards, and the disk size. Everything else
//! (the suite, the mirrors, the `user` account with passwordless sudo, hostname and resolver
//! files) is the same for every template and lives in [`super::rootfs`]. The cache key of a
//! root filesystem covers the recipe (packages, setup, disk size) but not the name or the
//! description, so renaming a template does not rebuild it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Disk size of a template's image unless it says otherwise, MiB (a sparse file: unused space
/// costs nothing on the host).
pub const DEFAULT_DISK_SIZE_MIB: u64 = 4096;

/// Smallest disk a template may ask for, MiB.
const MIN_DISK_SIZE_MIB: u64 = 512;

/// Largest disk a template may ask for, MiB (1 TiB).
const MAX_DISK_SIZE_MIB: u64 = 1 << 20;

/// typescript-language-server release in the `base` template (4.x: runs on Node.js 18).
const TS_LANGUAGE_SERVER: &str = "4.4.1";
/// TypeScript release it drives.
const TYPESCRIPT: &str = "5.9.3";

/// The packages of the `base` template: a shell, the usual tools, Python and Node.js.
const BASE_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "procps",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "curl",
    "git",
    "python3",
    // `python` is Python 3, as in E2B's and Daytona's images.
    "python-is-python3",
    "python3-pip",
    "python3-venv",
    // Daytona's `create_lsp_server("python", ...)`: python-lsp-server.
    "python3-pylsp",
    "nodejs",
    "npm",
    "sudo",
    "less",
    "nano",
    "unzip",
    "xz-utils",
];

/// What `code-interpreter-v1` adds to `base`: the scientific Python stack and a Jupyter kernel.
const CODE_INTERPRETER_PACKAGES: &[&str] = &[
    "python3-matplotlib",
    "python3-numpy",
    "python3-pandas",
    "python3-ipykernel",
    "python3-pil",
];

/// A recipe for a guest root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Name, `[a-z0-9][a-z0-9._-]*` (at most 63 characters).
    pub name: String,
    /// One line for people.
    pub description: String,
    /// Debian packages installed on top of the minimal system (no Recommends).
    pub packages: Vec<String>,
    /// Shell commands run in order as root inside the new system (`/bin/sh -eu`), after the
    /// packages are installed and the `user` account exists. A failing command fails the build.
    pub setup: Vec<String>,
    /// Size of the ext4 image in MiB; grown if the content needs more.
    pub disk_size_mib: u64,
}

impl Template {
    /// Checks the name, package names and disk size.
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: String| Error::Invalid(format!("template {:?}: {why}", self.name));
        let name_ok = self.name.len() <= 63
            && self
                .name
                .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !name_ok {
            return Err(invalid(
                "the name must match [a-z0-9][a-z0-9._-]* and be at most 63 characters".into(),
            ));
        }
        // Debian policy 5.6.1; this also keeps names from splitting the `--include` list.
        if let Some(bad) = self.packages.iter().find(|p| {
            p.len() < 2
                || !p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                || !p
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        }) {
            return Err(invalid(format!("{bad:?} is not a Debian package name")));
        }
        if !(MIN_DISK_SIZE_MIB..=MAX_DISK_SIZE_MIB).contains(&self.disk_size_mib) {
            return Err(invalid(format!(
                "disk_size_mib {} is outside {MIN_DISK_SIZE_MIB}..={MAX_DISK_SIZE_MIB}",
                self.disk_size_mib
            )));
        }
        Ok(())
    }
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The templates every installation has: `base` and `code-interpreter-v1`.
pub fn builtin_templates() -> Vec<Template> {
    let base = Template {
        name: "base".into(),
        description: "Debian 12 with bash, Python 3 (pip, venv), Node.js (npm), git, curl and \
                      the Python and TypeScript language servers; user `user` with passwordless \
                      sudo"
            .into(),
        packages: owned(BASE_PACKAGES),
        setup: vec![
            // The TypeScript language server (Daytona's `create_lsp_server("typescript", ...)`),
            // pinned to the last release that runs on Debian 12's Node.js 18.
            format!(
                "npm install --global --no-audit --no-fund --loglevel=error \
                 typescript-language-server@{TS_LANGUAGE_SERVER} typescript@{TYPESCRIPT} \
                 && rm -rf /root/.npm"
            ),
            // A smoke test of the toolchains, so a broken mirror state fails the build, not a
            // sandbox.
            "python3 --version && node --version && git --version >/dev/null \
             && pylsp --version && typescript-language-server --version >/dev/null"
                .into(),
        ],
        disk_size_mib: DEFAULT_DISK_SIZE_MIB,
    };
    let code_interpreter = Template {
        name: "code-interpreter-v1".into(),
        description: "base plus numpy, pandas, matplotlib, Pillow and an IPython kernel".into(),
        packages: [base.packages.clone(), owned(CODE_INTERPRETER_PACKAGES)].concat(),
        setup: [
            base.setup.clone(),
            vec!["MPLBACKEND=Agg python3 -c 'import numpy, pandas, matplotlib.pyplot, PIL, ipykernel'".into()],
        ]
        .concat(),
        disk_size_mib: DEFAULT_DISK_SIZE_MIB,
    };
    vec![base, code_interpreter]
}

/// The built-in template called `name`.
pub fn template(name: &str) -> Option<Template> {
    builtin_templates().into_iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_findable() {
        for t in builtin_templates() {
            t.validate().unwrap();
            assert_eq!(template(&t.name), Some(t.clone()));
        }
        let ci = template("code-interpreter-v1").unwrap();
        let base = template("base").unwrap();
        assert!(base.packages.iter().all(|p| ci.packages.contains(p)));
        assert!(ci.packages.contains(&"python3-ipykernel".to_owned()));
        assert!(template("nope").is_none());
    }

    #[test]
    fn bad_templates_are_rejected() {
        let good = template("base").unwrap();
        let with = |f: &dyn Fn(&mut Template)| {
            let mut t = good.clone();
            f(&mut t);
            t.validate()
        };
        assert!(with(&|t| t.name = "Base".into()).is_err());
        assert!(with(&|t| t.name = String::new()).is_err());
        assert!(with(&|t| t.packages.push("curl,wget".into())).is_err());
        assert!(with(&|t| t.packages.push("--allow-unauthenticated".into())).is_err());
        assert!(with(&|t| t.disk_size_mib = 16).is_err());
        assert!(with(&|t| t.packages.push("libstdc++6".into())).is_ok());
    }
}
