//! A build's base pulled from its OCI registry before the build plans its layers.
//!
//! The host imports the image as a disk layer ([`platinum_hostagent::image::oci`]); the build
//! then starts from that layer as it would from a custom template's, booted with the
//! [`PULLED_IMAGE_TEMPLATE`](super::base::PULLED_IMAGE_TEMPLATE) template's kernel and guest
//! agent. What the image's configuration sets for processes (environment, working directory,
//! user) becomes the template's defaults, as `docker run` would give them; its entrypoint and
//! command are not run (a template runs its start command), and the log says so.

use platinum_hostagent::image::oci::{ImageConfig, ImportImage, RegistryCredentials};

use super::log::BuildLog;
use super::model::{LogLevel, ProcessDefaults, RegistryAuth};
use super::runner::Plan;
use crate::engine::Engine;
use crate::error::{Error, Result};

impl Engine {
    /// Pulls `reference` (see the module docs) and makes `plan` start from it; gives up at the
    /// build's deadline or when the server shuts down.
    pub(crate) async fn pull_base(
        &self,
        plan: &mut Plan,
        reference: &str,
        auth: Option<&RegistryAuth>,
        log: &BuildLog,
    ) -> Result<()> {
        log.push(
            LogLevel::Info,
            None,
            format!("pulling {reference} from its registry"),
        );
        let report = |line: String| log.push(LogLevel::Info, None, line);
        let req = ImportImage {
            reference: reference.to_string(),
            credentials: auth.map(|a| RegistryCredentials {
                username: a.username.clone(),
                password: a.password.clone(),
            }),
            template: plan.base.clone(),
        };
        let started = std::time::Instant::now();
        let imported = tokio::select! {
            imported = self.host.import_image(req, &report) => imported?,
            _ = tokio::time::sleep_until(plan.deadline) => {
                return Err(Error::InvalidRequest(format!(
                    "pulling {reference}: the build's timeout passed"
                )));
            }
            _ = self.shutdown.cancelled() => {
                return Err(Error::Conflict("the server shut down during the pull".into()));
            }
        };
        if !imported.reused {
            log.push(
                LogLevel::Info,
                None,
                format!(
                    "imported {} in {:.1} s",
                    imported.reference,
                    started.elapsed().as_secs_f64()
                ),
            );
        }
        let (defaults, notes) = defaults_of(&imported.config);
        for note in notes {
            log.push(LogLevel::Info, None, note);
        }
        plan.base_note = format!(
            "base: {} ({}), pulled from its registry, booted with the {:?} template's kernel \
             and guest agent",
            imported.reference, imported.digest, plan.base
        );
        plan.start_layer = Some(imported.layer);
        plan.defaults = defaults;
        Ok(())
    }
}

/// The process defaults an image's configuration gives, and log lines about what it set and
/// what is not used.
fn defaults_of(config: &ImageConfig) -> (ProcessDefaults, Vec<String>) {
    let mut defaults = ProcessDefaults::default();
    let mut notes = Vec::new();
    for entry in &config.env {
        match entry.split_once('=') {
            Some((name, value)) if crate::env::check_env_name(name).is_ok() => {
                defaults.env.insert(name.to_string(), value.to_string());
            }
            _ => notes.push(format!(
                "image environment entry {entry:?} is not NAME=value; skipped"
            )),
        }
    }
    if let Some(dir) = config.workdir.as_ref().filter(|d| d.starts_with('/')) {
        defaults.workdir = Some(dir.clone());
    }
    if let Some(user) = &config.user {
        let name = user.split(':').next().unwrap_or_default();
        if name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
            defaults.user = Some(name.to_string());
        } else {
            notes.push(format!(
                "image user {user:?} is not a user name; processes run as the template's user"
            ));
        }
    }
    if !defaults.env.is_empty() || defaults.workdir.is_some() || defaults.user.is_some() {
        notes.push(format!(
            "from the image's configuration: environment {:?}, working directory {}, user {}",
            defaults.env.keys().collect::<Vec<_>>(),
            defaults.workdir.as_deref().unwrap_or("-"),
            defaults.user.as_deref().unwrap_or("-"),
        ));
    }
    let command: Vec<&str> = config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .map(String::as_str)
        .collect();
    if !command.is_empty() {
        notes.push(format!(
            "the image's entrypoint and command {command:?} are not run; a template runs its \
             start command"
        ));
    }
    (defaults, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_configs_become_process_defaults() {
        let (d, notes) = defaults_of(&ImageConfig {
            env: vec![
                "PATH=/usr/local/bin:/usr/bin".into(),
                "EMPTY=".into(),
                "junk".into(),
            ],
            workdir: Some("/app".into()),
            user: Some("app:staff".into()),
            entrypoint: vec![],
            cmd: vec!["/bin/sh".into()],
        });
        assert_eq!(d.env["PATH"], "/usr/local/bin:/usr/bin");
        assert_eq!(d.env["EMPTY"], "");
        assert_eq!(d.env.len(), 2);
        assert_eq!(d.workdir.as_deref(), Some("/app"));
        assert_eq!(d.user.as_deref(), Some("app"));
        assert!(notes.iter().any(|n| n.contains("junk")));
        assert!(notes.iter().any(|n| n.contains("not run")));
        let (d, notes) = defaults_of(&ImageConfig {
            user: Some("1000".into()),
            ..Default::default()
        });
        assert_eq!(d, ProcessDefaults::default());
        assert!(notes[0].contains("not a user name"));
    }
}
