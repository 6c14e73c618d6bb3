//! Language servers in sandboxes ([`crate::commands::lsp`] are the commands): which ones run,
//! keyed by sandbox, language and project directory, as Daytona's daemon keys them.
//!
//! A server is an ordinary guest process (`pylsp`, `typescript-language-server --stdio`) run as
//! the sandbox's default user in the project directory, tagged [`TAG_PREFIX`]`<language>:<dir>`
//! (front ends hide such processes from process lists), spoken to by [`server::LanguageServer`].
//! At most [`MAX_SERVERS_PER_SANDBOX`] run in one sandbox. They belong to one boot of the VM: a
//! stop or a reboot ends them, and the next request says so (start it again).

pub(crate) mod framing;
pub(crate) mod server;
pub mod types;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use server::LanguageServer;
use types::LspLanguage;

/// Tag prefix of language-server processes.
pub const TAG_PREFIX: &str = "platinum-lsp:";

/// Language servers one sandbox may run at once.
pub const MAX_SERVERS_PER_SANDBOX: usize = 8;

/// Which server: its language and project directory.
pub(crate) type ServerKey = (LspLanguage, String);

/// The engine's language servers, by sandbox.
#[derive(Default)]
pub(crate) struct LanguageServers {
    map: Mutex<HashMap<String, HashMap<ServerKey, Arc<LanguageServer>>>>,
    /// Per sandbox: serialises its starts, so two starts of one server make one process (and a
    /// server slow to initialize holds up only its own sandbox).
    starting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl LanguageServers {
    /// The server for `key` in `sandbox`, if one was started.
    pub(crate) fn get(&self, sandbox: &str, key: &ServerKey) -> Option<Arc<LanguageServer>> {
        self.map
            .lock()
            .expect("lsp registry")
            .get(sandbox)?
            .get(key)
            .cloned()
    }

    /// The lock that serialises starts in `sandbox`.
    pub(crate) fn start_lock(&self, sandbox: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.starting
            .lock()
            .expect("lsp registry")
            .entry(sandbox.to_string())
            .or_default()
            .clone()
    }

    /// How many servers `sandbox` has that still serve.
    pub(crate) fn live_count(&self, sandbox: &str) -> usize {
        self.map
            .lock()
            .expect("lsp registry")
            .get(sandbox)
            .map_or(0, |m| m.values().filter(|s| s.ended().is_none()).count())
    }

    /// Records a started server (replacing an ended one under the same key).
    pub(crate) fn insert(&self, sandbox: &str, key: ServerKey, server: Arc<LanguageServer>) {
        let mut map = self.map.lock().expect("lsp registry");
        let servers = map.entry(sandbox.to_string()).or_default();
        servers.retain(|_, s| s.ended().is_none());
        servers.insert(key, server);
    }

    /// Takes a server out of the registry.
    pub(crate) fn remove(&self, sandbox: &str, key: &ServerKey) -> Option<Arc<LanguageServer>> {
        self.map
            .lock()
            .expect("lsp registry")
            .get_mut(sandbox)?
            .remove(key)
    }

    /// Forgets a sandbox's servers (it was deleted).
    pub(crate) fn forget(&self, sandbox: &str) {
        self.map.lock().expect("lsp registry").remove(sandbox);
        self.starting.lock().expect("lsp registry").remove(sandbox);
    }
}
