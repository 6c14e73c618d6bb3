//! Custom templates: builds that turn a base and a list of steps into a template sandboxes
//! start from as fast as from a built-in one.
//!
//! A build ([`model::TemplateBuildRequest`]) runs its steps in order inside a builder VM
//! started from its base, never on the host: shell commands as root or a user, files uploaded by
//! the caller and unpacked in place ([`files`]), environment, working directory and user for
//! later steps and for the template's processes. After each step that changes the disk, the
//! VM's disk is kept as a layer under a key that hashes the base and every step so far
//! ([`keys`]); a later build with the same first steps starts from the newest layer it shares.
//! Then the start command is started and its ready command awaited, the VM is saved as the
//! template's signed ready snapshot, and only then is the template recorded, so a failed build
//! leaves no template and a template's sandboxes start by restore (or claim from a pool) like
//! the built-in ones. Base images are named the way the SDKs name them ([`base`]); one that is
//! no built-in template is pulled from its registry first (`pull.rs`).
//!
//! Files: `model.rs` the shapes, `base.rs` base image names, `dockerfile.rs` Dockerfiles, `keys.rs` layer keys and the
//! cached prefix, `pull.rs` bases from registries, `files.rs` uploads, `log.rs` the log followers read, `runner.rs` the build
//! itself; the commands are in [`crate::commands::custom_templates`].

pub mod base;
pub mod dockerfile;
pub mod files;
pub mod keys;
pub mod log;
pub mod model;
mod pull;
pub(crate) mod runner;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use model::{CustomTemplate, TemplateBuild};

/// A build in progress: its record as it is now and its log.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub build: TemplateBuild,
    pub log: Arc<log::BuildLog>,
}

/// The engine's custom templates (a copy of the store's, so that lookups on every create need
/// no query) and the builds in progress.
#[derive(Debug, Default)]
pub struct Builds {
    pub(crate) templates: RwLock<BTreeMap<String, CustomTemplate>>,
    pub(crate) running: Mutex<HashMap<String, Running>>,
}

impl Builds {
    /// The custom template called `name`.
    pub(crate) fn template(&self, name: &str) -> Option<CustomTemplate> {
        self.templates
            .read()
            .expect("custom templates")
            .get(name)
            .cloned()
    }

    /// The working directory and user a custom template's processes get, where it set them.
    pub(crate) fn defaults_of(&self, template: &str) -> Option<model::ProcessDefaults> {
        self.templates
            .read()
            .expect("custom templates")
            .get(template)
            .map(|t| t.defaults.clone())
    }

    /// The build in progress that makes `template`, if any.
    pub(crate) fn running_for(&self, template: &str) -> Option<String> {
        self.running
            .lock()
            .expect("running builds")
            .values()
            .find(|r| r.build.template == template)
            .map(|r| r.build.id.clone())
    }
}
