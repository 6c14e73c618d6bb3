//! Root filesystems: a template bootstrapped into Debian 12 and written to an ext4 image.
//!
//! Steps, all inside the entry's partial directory:
//!
//! 1. **Bootstrap** `tree/` with `mmdebstrap --mode=unshare --variant=apt` from deb.debian.org
//!    (bookworm, bookworm-updates, bookworm-security), installing the template's packages
//!    without Recommends. Run as root, unshare mode keeps real file ownership in the directory
//!    but does its `/proc`, `/sys` and `/dev` mounts in a private mount namespace, so a killed
//!    build cannot leave mounts behind. Manual pages, info pages and documentation (except
//!    copyright files) are not installed, and apt lists and caches are dropped at the end.
//!    Without mmdebstrap, `debootstrap --variant=minbase` does the same job less tidily.
//! 2. **Customize** inside the new system (`/bin/sh`, as root): create `user` (uid/gid 1000,
//!    home `/home/user`, shell bash), then run the template's setup commands in order; any
//!    failing command fails the build. Setup commands that fetch from package registries (npm,
//!    pip, curl, git) trust what the host trusts: the host's CA bundle (`$SSL_CERT_FILE`, else
//!    `/etc/ssl/certs/ca-certificates.crt`, which includes the CA of a TLS-intercepting proxy
//!    the host uses) is put in the tree for them and deleted before the image is made.
//! 3. **Finish** from the host: `/etc/hostname`, `/etc/hosts`, a placeholder `/etc/resolv.conf`
//!    (the guest agent writes the real one at boot), `/etc/sudoers.d/user` (mode 0440,
//!    passwordless sudo), and a check that the `user` account came out right.
//! 4. **Image**: a sparse `rootfs.ext4` of the template's disk size (more if the content needs
//!    it), filled by `mkfs.ext4 -d` without any loop mount, label `platinum-root`, then `tree/`
//!    is deleted.
//!
//! The cache key covers the packages (sorted), the setup commands, the disk size, the suite and
//! mirrors, and the builder version. Bootstrapping needs root: only root can create the files
//! of other users that `mkfs.ext4 -d` copies into the image.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::entry::{Built, Entry, KindDir, blocking, key_of, remove_tree};
use super::manifest::EntryKind;
use super::progress::{Progress, Step};
use super::template::Template;
use crate::error::{Error, IoContext, Result};
use crate::tool::{Tool, find_program};

/// Debian release of every root filesystem.
pub(crate) const SUITE: &str = "bookworm";
/// Main Debian mirror (also for `bookworm-updates`).
pub(crate) const MIRROR: &str = "http://deb.debian.org/debian";
/// Debian security mirror.
pub(crate) const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// Packages the builder itself needs in every image: the user's shell, `useradd`, `sudo`.
const BUILDER_PACKAGES: &[&str] = &["bash", "passwd", "sudo"];

/// The unprivileged account sandboxes run commands as (E2B's default user).
pub(crate) const USER: &str = "user";
/// Its uid and gid.
pub(crate) const USER_ID: u32 = 1000;
/// Hostname baked into the image (the agent may set another one at boot).
const HOSTNAME: &str = "sandbox";

/// The image's file name in its cache entry.
pub(crate) const IMAGE_FILE: &str = "rootfs.ext4";
/// The ext4 volume label.
pub(crate) const FS_LABEL: &str = "platinum-root";

/// dpkg path filters: no manual or info pages, no documentation except copyright files.
const DPKG_PATH_FILTERS: [&str; 4] = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
];

/// `PATH` for the bootstrap tools: maintainer scripts inside the new system inherit it, so it
/// must name that system's directories whatever the caller's `PATH` is.
const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a root filesystem build refuses to run unprivileged.
const NEEDS_ROOT: &str = "building a root filesystem needs root (the image holds files owned by \
                          several users); run `platinum image build` as root";

/// Room left on top of the content for ext4 metadata, the journal and first writes, MiB.
const HEADROOM_MIB: u64 = 384;

/// What the root filesystem key is computed from.
#[derive(Serialize)]
struct RootfsInputs<'a> {
    builder_version: u32,
    suite: &'static str,
    mirror: &'static str,
    security_mirror: &'static str,
    packages: Vec<String>,
    setup: &'a [String],
    disk_size_mib: u64,
}

/// What a root filesystem build records in its manifest.
#[derive(Debug, Serialize)]
struct RootfsDetails {
    template: String,
    bootstrap: String,
    content_bytes: u64,
    disk_size_mib: u64,
    bootstrap_seconds: u64,
}

/// The tool that creates the Debian tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bootstrapper {
    Mmdebstrap,
    Debootstrap,
}

impl Bootstrapper {
    fn detect() -> Result<Self> {
        if find_program("mmdebstrap").is_some() {
            Ok(Bootstrapper::Mmdebstrap)
        } else if find_program("debootstrap").is_some() {
            tracing::warn!("mmdebstrap is not installed; falling back to debootstrap");
            Ok(Bootstrapper::Debootstrap)
        } else {
            Err(Error::MissingProgram {
                program: "mmdebstrap".into(),
                hint: "apt-get install mmdebstrap".into(),
            })
        }
    }

    fn name(self) -> &'static str {
        match self {
            Bootstrapper::Mmdebstrap => "mmdebstrap",
            Bootstrapper::Debootstrap => "debootstrap",
        }
    }
}

/// Returns the cached root filesystem image of `template`, building it if needed.
pub(crate) async fn ensure(
    images: &Path,
    template: &Template,
    progress: &Progress,
) -> Result<(PathBuf, Entry)> {
    template.validate()?;
    let inputs = RootfsInputs {
        builder_version: super::BUILDER_VERSION,
        suite: SUITE,
        mirror: MIRROR,
        security_mirror: SECURITY_MIRROR,
        packages: packages(template),
        setup: &template.setup,
        disk_size_mib: template.disk_size_mib,
    };
    let key = key_of(&inputs)?;
    let entry = KindDir::new(images, EntryKind::Rootfs)
        .ensure(&key, &inputs, progress, |dir| {
            build(dir, template, &inputs.packages, progress)
        })
        .await?;
    Ok((entry.dir.join(IMAGE_FILE), entry))
}

/// The template's packages plus the builder's, sorted and without duplicates.
fn packages(template: &Template) -> Vec<String> {
    let mut all: Vec<String> = template
        .packages
        .iter()
        .cloned()
        .chain(BUILDER_PACKAGES.iter().map(|p| (*p).to_owned()))
        .collect();
    all.sort();
    all.dedup();
    all
}

async fn build(
    dir: PathBuf,
    template: &Template,
    packages: &[String],
    progress: &Progress,
) -> Result<Built> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Image {
            step: "rootfs".into(),
            message: NEEDS_ROOT.into(),
        });
    }
    let bootstrapper = Bootstrapper::detect()?;
    let tree = dir.join("tree");
    let script = dir.join("customize.sh");
    std::fs::write(&script, customize_script(template, packages, bootstrapper))
        .ctx(|| format!("writing {}", script.display()))?;

    let step = progress.step(format!(
        "bootstrapping Debian {SUITE} for template {}",
        template.name
    ));
    match bootstrapper {
        Bootstrapper::Mmdebstrap => mmdebstrap(&tree, packages, &script, &step).await?,
        Bootstrapper::Debootstrap => debootstrap(&tree, &script, &step).await?,
    }
    let bootstrap_seconds = step.elapsed().as_secs();
    step.done(format!("{} packages requested", packages.len()));

    let step = progress.step("finishing the root filesystem");
    let (content_bytes, inodes) = {
        let tree = tree.clone();
        blocking("rootfs", move || {
            finish_tree(&tree)?;
            tree_usage(&tree)
        })
        .await?
    };
    step.done(format!("{} MB of content", content_bytes / 1_000_000));

    let disk_size_mib = disk_size_mib(template.disk_size_mib, content_bytes);
    if disk_size_mib > template.disk_size_mib {
        tracing::warn!(
            template = %template.name,
            asked_mib = template.disk_size_mib,
            using_mib = disk_size_mib,
            "the content does not fit the template's disk size; making the image larger"
        );
    }
    let image = dir.join(IMAGE_FILE);
    let step = progress.step(format!(
        "writing {IMAGE_FILE} ({disk_size_mib} MiB, sparse)"
    ));
    make_ext4(&tree, &image, disk_size_mib, inodes).await?;
    let allocated = image
        .metadata()
        .ctx(|| format!("inspecting {}", image.display()))?
        .blocks()
        * 512;
    step.done(format!("{} MB allocated", allocated / 1_000_000));

    let step = progress.step("removing the build tree");
    blocking("rootfs", move || {
        remove_tree(&tree)?;
        std::fs::remove_file(&script).ctx(|| format!("removing {}", script.display()))
    })
    .await?;
    step.done("");

    let details = RootfsDetails {
        template: template.name.clone(),
        bootstrap: bootstrapper.name().into(),
        content_bytes,
        disk_size_mib,
        bootstrap_seconds,
    };
    Ok(Built {
        label: format!("template {} (Debian {SUITE})", template.name),
        details: serde_json::to_value(details).map_err(|e| Error::Image {
            step: "rootfs".into(),
            message: e.to_string(),
        })?,
    })
}

/// The script run as root inside the new system: the `user` account, then the template's setup
/// commands, each in a subshell so that a failure anywhere in a `&&` list stops the build.
/// After debootstrap it first installs the packages itself: debootstrap only bootstraps one
/// suite, and its `--include` resolver fails on packages with deep dependency trees (npm).
fn customize_script(
    template: &Template,
    packages: &[String],
    bootstrapper: Bootstrapper,
) -> String {
    let mut script = String::from(
        "set -eu\n\
         export DEBIAN_FRONTEND=noninteractive HOME=/root LC_ALL=C.UTF-8\n\
         cd /\n",
    );
    let ca = HOST_CA_IN_TREE;
    script.push_str(&format!(
        "if [ -f {ca} ]; then\n  export SSL_CERT_FILE={ca} NODE_EXTRA_CA_CERTS={ca} \
         PIP_CERT={ca} REQUESTS_CA_BUNDLE={ca} CURL_CA_BUNDLE={ca} GIT_SSL_CAINFO={ca}\nfi\n"
    ));
    if bootstrapper == Bootstrapper::Debootstrap {
        let excludes: String = DPKG_PATH_FILTERS.iter().map(|f| format!("{f}\n")).collect();
        script.push_str(&format!(
            "printf '%s' '{excludes}' > /etc/dpkg/dpkg.cfg.d/platinum-excludes\n\
             apt-get update -q\n\
             apt-get -y -q dist-upgrade\n\
             apt-get -y -q --no-install-recommends install {}\n\
             apt-get clean\n",
            packages.join(" ")
        ));
    }
    script.push_str(&format!(
        "groupadd --gid {USER_ID} {USER}\n\
         useradd --uid {USER_ID} --gid {USER_ID} --create-home --home-dir /home/{USER} \
         --shell /bin/bash --comment 'Platinum sandbox user' {USER}\n"
    ));
    for (n, command) in template.setup.iter().enumerate() {
        script.push_str(&format!(
            "echo 'I: platinum setup command {}/{}'\n(\n{command}\n) || {{ echo \"setup command {} failed\" >&2; exit 1; }}\n",
            n + 1,
            template.setup.len(),
            n + 1
        ));
    }
    script.push_str(&format!("rm -f {HOST_CA_IN_TREE}\n"));
    script
}

/// Where the host's CA bundle is while setup commands run (deleted at the end of the script).
const HOST_CA_IN_TREE: &str = "/tmp/platinum-host-ca.crt";

/// The host's CA bundle, for setup commands (see the module docs) and template build steps.
pub fn host_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/etc/ssl/certs/ca-certificates.crt")])
        .find(|p| p.is_file())
}

/// Single-quotes `s` for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn mmdebstrap(tree: &Path, packages: &[String], script: &Path, step: &Step) -> Result<()> {
    let script = shell_quote(&script.to_string_lossy());
    let sources = [
        format!("deb {MIRROR} {SUITE} main"),
        format!("deb {MIRROR} {SUITE}-updates main"),
        format!("deb {SECURITY_MIRROR} {SUITE}-security main"),
    ];
    Tool::new("bootstrap", "mmdebstrap")?
        .env("PATH", CHROOT_PATH)
        .args([
            "--mode=unshare",
            "--variant=apt",
            "--format=directory",
            "--components=main",
            "--aptopt=Acquire::Languages \"none\"",
        ])
        .args(DPKG_PATH_FILTERS.iter().map(|f| format!("--dpkgopt={f}")))
        .arg(format!("--include={}", packages.join(",")))
        .args(host_ca_bundle().map(|ca| {
            format!(
                "--customize-hook=upload {} {HOST_CA_IN_TREE}",
                ca.to_string_lossy()
            )
        }))
        .arg(format!(
            "--customize-hook=chroot \"$1\" /bin/sh -eu < {script}"
        ))
        .arg(SUITE)
        .arg(tree)
        .args(sources)
        .run_lines(|line| report_line(step, line))
        .await
}

async fn debootstrap(tree: &Path, script: &Path, step: &Step) -> Result<()> {
    Tool::new("bootstrap", "debootstrap")?
        .env("PATH", CHROOT_PATH)
        .args(["--variant=minbase", "--components=main"])
        .arg(SUITE)
        .arg(tree)
        .arg(MIRROR)
        .run_lines(|line| report_line(step, line))
        .await?;
    let sources = format!(
        "deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\ndeb {SECURITY_MIRROR} {SUITE}-security main\n"
    );
    let list = tree.join("etc/apt/sources.list");
    std::fs::write(&list, sources).ctx(|| format!("writing {}", list.display()))?;
    if let Some(ca) = host_ca_bundle() {
        let inside = tree.join(HOST_CA_IN_TREE.trim_start_matches('/'));
        std::fs::copy(&ca, &inside).ctx(|| format!("copying {} into the tree", ca.display()))?;
    }
    // A private mount namespace for /proc, so nothing stays mounted in the tree afterwards.
    let script = File::open(script).ctx(|| format!("opening {}", script.display()))?;
    Tool::new("customize", "unshare")?
        .env("PATH", CHROOT_PATH)
        .args([
            "--mount",
            "--fork",
            "/bin/sh",
            "-euc",
            r#"mount -t proc proc "$1/proc" && exec chroot "$1" /bin/sh -eu"#,
            "sh",
        ])
        .arg(tree)
        .stdin(script)
        .run_lines(|line| report_line(step, line))
        .await
}

/// Status lines (`I: ...`) of the bootstrap tools become the step's message and a log line
/// (debootstrap's per-package lines only a debug line); everything else goes to the debug log.
fn report_line(step: &Step, line: &str) {
    const PER_PACKAGE: [&str; 5] = [
        "Retrieving ",
        "Validating ",
        "Extracting ",
        "Unpacking ",
        "Configuring ",
    ];
    match line.strip_prefix("I: ") {
        Some(status) => {
            if PER_PACKAGE.iter().any(|p| status.starts_with(p)) {
                tracing::debug!(status, "bootstrap");
            } else {
                tracing::info!(status, "bootstrap");
            }
            step.set_message(status.to_owned());
        }
        None => tracing::debug!(line, "bootstrap output"),
    }
}

/// Host-side finishing touches on the bootstrapped tree.
fn finish_tree(tree: &Path) -> Result<()> {
    write_host_files(tree)?;
    std::fs::create_dir_all(tree.join("etc/sudoers.d"))
        .ctx(|| "creating etc/sudoers.d".to_owned())?;
    write_sudoers(tree)?;
    for dir in ["var/lib/apt/lists", "var/cache/apt"] {
        remove_contents(&tree.join(dir))?;
    }
    check_user(tree)
}

/// Passwordless sudo for `user` (`etc/sudoers.d` must be a directory).
pub(crate) fn write_sudoers(tree: &Path) -> Result<()> {
    write_file(
        tree,
        "etc/sudoers.d/user",
        &format!("{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
        0o440,
    )
}

/// The files every root gets from the host: `/etc/hostname`, `/etc/hosts`, a placeholder
/// `/etc/resolv.conf` and an emptied `/etc/machine-id`. `tree/etc` must be a directory.
pub(crate) fn write_host_files(tree: &Path) -> Result<()> {
    write_file(tree, "etc/hostname", &format!("{HOSTNAME}\n"), 0o644)?;
    write_file(
        tree,
        "etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\
             ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
        ),
        0o644,
    )?;
    write_file(
        tree,
        "etc/resolv.conf",
        "# Placeholder: the Platinum guest agent writes the sandbox's resolvers here at boot.\n",
        0o644,
    )?;
    if tree.join("etc/machine-id").symlink_metadata().is_ok() {
        // Every sandbox must not share one machine id; systemd-less guests leave it empty.
        write_file(tree, "etc/machine-id", "", 0o444)?;
    }
    Ok(())
}

/// Replaces `rel` (a file or a symlink) in `tree` with a regular file of `mode`.
fn write_file(tree: &Path, rel: &str, content: &str, mode: u32) -> Result<()> {
    let path = tree.join(rel);
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(&path).ctx(|| format!("replacing {}", path.display()))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .ctx(|| format!("creating {}", path.display()))?;
    file.write_all(content.as_bytes())
        .ctx(|| format!("writing {}", path.display()))?;
    // The umask may have narrowed the mode.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .ctx(|| format!("setting the mode of {}", path.display()))
}

/// Deletes what is inside `dir` (apt's lists and caches), keeping the directories apt expects.
fn remove_contents(dir: &Path) -> Result<()> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in read {
        let path = entry.ctx(|| format!("listing {}", dir.display()))?.path();
        if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            remove_contents(&path)?;
        } else {
            std::fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Checks that `user` exists with uid/gid 1000, home `/home/user` (owned by it) and bash.
fn check_user(tree: &Path) -> Result<()> {
    let passwd =
        std::fs::read_to_string(tree.join("etc/passwd")).ctx(|| "reading etc/passwd".to_owned())?;
    let expected = (USER_ID.to_string(), format!("/home/{USER}"), "/bin/bash");
    let found = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&USER));
    let ok = found.as_ref().is_some_and(|f| {
        f.len() == 7
            && f[2] == expected.0
            && f[3] == expected.0
            && f[5] == expected.1
            && f[6] == expected.2
    });
    let home = tree.join("home").join(USER);
    let home_ok = home
        .metadata()
        .is_ok_and(|m| m.is_dir() && m.uid() == USER_ID && m.gid() == USER_ID);
    if ok && home_ok {
        Ok(())
    } else {
        Err(Error::Image {
            step: "rootfs".into(),
            message: format!(
                "the `{USER}` account came out wrong: passwd entry {found:?}, home directory ok: {home_ok}"
            ),
        })
    }
}

/// Bytes allocated by the tree's files and the number of inodes it uses. Hard links count once.
pub(crate) fn tree_usage(tree: &Path) -> Result<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .ctx(|| format!("inspecting {}", entry.path().display()))?;
            if seen.insert((meta.dev(), meta.ino())) {
                bytes += meta.blocks() * 512;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, seen.len() as u64 + 1))
}

/// The image size: what the template asks for, or the content plus headroom rounded up to
/// 256 MiB when that is more.
pub(crate) fn disk_size_mib(asked_mib: u64, content_bytes: u64) -> u64 {
    let needed = (content_bytes + content_bytes / 10).div_ceil(1 << 20) + HEADROOM_MIB;
    asked_mib.max(needed.next_multiple_of(256))
}

pub(crate) async fn make_ext4(tree: &Path, image: &Path, size_mib: u64, inodes: u64) -> Result<()> {
    File::create(image)
        .and_then(|f| f.set_len(size_mib << 20))
        .ctx(|| format!("creating the sparse file {}", image.display()))?;
    // Twice the inodes in use, and no fewer than the default of one per 16 KiB.
    let inodes = (inodes * 2).max((size_mib << 20) / 16384);
    Tool::new("mkfs.ext4", "mkfs.ext4")?
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            FS_LABEL,
            "-m",
            "0",
            "-E",
            "root_owner=0:0",
        ])
        .arg("-N")
        .arg(inodes.to_string())
        .arg("-d")
        .arg(tree)
        .arg(image)
        .output()
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::template::template;

    #[test]
    fn rootfs_keys_follow_the_recipe_not_the_name() {
        let base = template("base").unwrap();
        let key = |t: &Template| {
            key_of(&RootfsInputs {
                builder_version: 1,
                suite: SUITE,
                mirror: MIRROR,
                security_mirror: SECURITY_MIRROR,
                packages: packages(t),
                setup: &t.setup,
                disk_size_mib: t.disk_size_mib,
            })
            .unwrap()
        };
        let renamed = Template {
            name: "other".into(),
            description: "x".into(),
            ..base.clone()
        };
        assert_eq!(key(&base), key(&renamed));
        let mut reordered = base.clone();
        reordered.packages.reverse();
        assert_eq!(key(&base), key(&reordered));
        let mut more = base.clone();
        more.packages.push("jq".into());
        assert_ne!(key(&base), key(&more));
        let bigger = Template {
            disk_size_mib: 8192,
            ..base.clone()
        };
        assert_ne!(key(&base), key(&bigger));
        assert_ne!(key(&base), key(&template("code-interpreter-v1").unwrap()));
    }

    #[test]
    fn customize_script_creates_the_user_then_runs_setup_checked() {
        let t = Template {
            setup: vec!["false && true".into(), "echo done".into()],
            ..template("base").unwrap()
        };
        let packages = packages(&t);
        let script = customize_script(&t, &packages, Bootstrapper::Mmdebstrap);
        let user = script
            .find("useradd --uid 1000 --gid 1000 --create-home --home-dir /home/user")
            .unwrap();
        assert!(user < script.find("false && true").unwrap());
        assert!(!script.contains("dist-upgrade"));
        // The host's CA bundle is trusted by setup commands, and gone before the image is made.
        let trusted = script
            .find("export SSL_CERT_FILE=/tmp/platinum-host-ca.crt")
            .unwrap();
        assert!(trusted < script.find("false && true").unwrap());
        assert!(script.ends_with("rm -f /tmp/platinum-host-ca.crt\n"));
        let after_debootstrap = customize_script(&t, &packages, Bootstrapper::Debootstrap);
        assert!(after_debootstrap.contains("apt-get -y -q dist-upgrade"));
        assert!(after_debootstrap.contains("install bash ca-certificates coreutils curl git"));

        // The first setup command fails inside a && list; the script must stop there.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sh");
        let runnable = script
            .replace("groupadd", ": groupadd")
            .replace("useradd", ": useradd");
        std::fs::write(&path, runnable).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-eu")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("setup command 1 failed"));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("done"));
    }

    #[test]
    fn disk_grows_only_when_the_content_needs_it() {
        assert_eq!(disk_size_mib(4096, 1 << 30), 4096);
        let big = disk_size_mib(1024, 2 << 30);
        assert!(
            big >= 2048 + 204 + HEADROOM_MIB && big.is_multiple_of(256),
            "{big}"
        );
    }

    #[test]
    fn finishing_writes_config_and_checks_the_user() {
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        for dir in [
            "etc",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives",
            "home/user",
        ] {
            std::fs::create_dir_all(t.join(dir)).unwrap();
        }
        std::fs::write(t.join("var/lib/apt/lists/deb.debian.org_Packages"), b"x").unwrap();
        std::os::unix::fs::symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            t.join("etc/resolv.conf"),
        )
        .unwrap();
        std::fs::write(t.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let err = finish_tree(t).unwrap_err();
        assert!(err.to_string().contains("account came out wrong"), "{err}");

        std::fs::write(
            t.join("etc/passwd"),
            "user:x:1000:1000:Platinum sandbox user:/home/user:/bin/bash\n",
        )
        .unwrap();
        // Only root can hand the home directory to uid 1000; otherwise the check must say so.
        let is_root = nix::unistd::geteuid().is_root();
        if is_root {
            std::os::unix::fs::chown(t.join("home/user"), Some(1000), Some(1000)).unwrap();
        }
        assert_eq!(finish_tree(t).is_ok(), is_root);

        let sudoers = t.join("etc/sudoers.d/user");
        assert_eq!(
            std::fs::read_to_string(&sudoers).unwrap(),
            "user ALL=(ALL:ALL) NOPASSWD: ALL\n"
        );
        assert_eq!(sudoers.metadata().unwrap().mode() & 0o7777, 0o440);
        assert!(
            t.join("etc/resolv.conf")
                .symlink_metadata()
                .unwrap()
                .is_file()
        );
        assert_eq!(
            std::fs::read_to_string(t.join("etc/hostname")).unwrap(),
            "sandbox\n"
        );
        assert!(t.join("var/lib/apt/lists/partial").is_dir());
        assert!(!t.join("var/lib/apt/lists/deb.debian.org_Packages").exists());
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
