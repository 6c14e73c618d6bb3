//! Client configuration for Claude Code, Cursor and Windsurf (`platinum mcp install`).
//!
//! Each client keeps its MCP servers under `mcpServers` in a JSON file, with slightly different
//! entry shapes: Claude Code wants `"type": "stdio" | "http"`, Cursor takes `url` for remote
//! servers, Windsurf `serverUrl`; environment references are `${VAR}` in Claude Code and
//! `${env:VAR}` in the others. [`entry`] builds the entry, [`merge`] puts it into an existing
//! file's text without touching anything else (other servers, other settings, key order), and
//! [`install`] writes the result atomically, keeping a `.bak` copy of the previous file.

use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// Environment variable the HTTP entries read the API key from.
pub const KEY_VAR: &str = "PLATINUM_API_KEY";

/// An MCP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Claude Code.
    Claude,
    /// Cursor.
    Cursor,
    /// Windsurf (Cascade).
    Windsurf,
}

/// Where the entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// For the current user, every project.
    User,
    /// For the project in the current directory (a file meant to be committed).
    Project,
}

/// How the client reaches Platinum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// The client starts `<command> mcp` and talks over stdio.
    Stdio {
        /// Path of the `platinum` binary.
        command: String,
        /// Environment for it (e.g. `PLATINUM_URL`).
        env: Vec<(String, String)>,
    },
    /// The client connects to `<url>` (the server's `/mcp` endpoint) with the API key.
    Http {
        /// Endpoint URL.
        url: String,
    },
}

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The existing file is not a JSON object with an object `mcpServers`.
    #[error(
        "{path} is not a JSON object with an `mcpServers` object ({reason}); fix or move it, then try again"
    )]
    NotAConfig {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The client has no configuration at that scope.
    #[error("{0}")]
    Unsupported(String),
    /// Reading or writing failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What [`merge`] did to the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// There was no entry of that name.
    Added,
    /// An entry of that name was different and is replaced.
    Replaced,
    /// The same entry was already there.
    Unchanged,
}

impl Client {
    /// The client's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Client::Claude => "claude",
            Client::Cursor => "cursor",
            Client::Windsurf => "windsurf",
        }
    }

    fn key_ref(self) -> String {
        match self {
            Client::Claude => format!("${{{KEY_VAR}}}"),
            Client::Cursor | Client::Windsurf => format!("${{env:{KEY_VAR}}}"),
        }
    }
}

/// The `mcpServers` entry for `client`.
pub fn entry(client: Client, connection: &Connection) -> Value {
    match connection {
        Connection::Stdio { command, env } => {
            let mut e = Map::new();
            if client == Client::Claude {
                e.insert("type".into(), json!("stdio"));
            }
            e.insert("command".into(), json!(command));
            e.insert("args".into(), json!(["mcp"]));
            if !env.is_empty() {
                let env: Map<String, Value> =
                    env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                e.insert("env".into(), Value::Object(env));
            }
            Value::Object(e)
        }
        Connection::Http { url } => {
            let headers = json!({ "Authorization": format!("Bearer {}", client.key_ref()) });
            match client {
                Client::Claude => json!({ "type": "http", "url": url, "headers": headers }),
                Client::Cursor => json!({ "url": url, "headers": headers }),
                Client::Windsurf => json!({ "serverUrl": url, "headers": headers }),
            }
        }
    }
}

/// The configuration file of `client` at `scope` (`home`: the user's home, `cwd`: the project).
pub fn config_path(
    client: Client,
    scope: Scope,
    home: &Path,
    cwd: &Path,
) -> Result<PathBuf, InstallError> {
    Ok(match (client, scope) {
        (Client::Claude, Scope::User) => home.join(".claude.json"),
        (Client::Claude, Scope::Project) => cwd.join(".mcp.json"),
        (Client::Cursor, Scope::User) => home.join(".cursor/mcp.json"),
        (Client::Cursor, Scope::Project) => cwd.join(".cursor/mcp.json"),
        (Client::Windsurf, Scope::User) => home.join(".codeium/windsurf/mcp_config.json"),
        (Client::Windsurf, Scope::Project) => {
            return Err(InstallError::Unsupported(
                "Windsurf reads MCP servers only from ~/.codeium/windsurf/mcp_config.json; use --scope user".into(),
            ));
        }
    })
}

/// Puts `entry` under `mcpServers.<name>` in the JSON text `existing` (a missing or blank file
/// is an empty object); everything else stays as it was. Returns the new text.
pub fn merge(
    existing: Option<&str>,
    path: &Path,
    name: &str,
    entry: Value,
) -> Result<(String, Change), InstallError> {
    let not_config = |reason: &str| InstallError::NotAConfig {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let mut doc = match existing.map(str::trim) {
        None | Some("") => Value::Object(Map::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| not_config(&e.to_string()))?,
    };
    let root = doc
        .as_object_mut()
        .ok_or_else(|| not_config("the top level is not an object"))?;
    let servers = root
        .entry("mcpServers")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| not_config("`mcpServers` is not an object"))?;
    let change = match servers.get(name) {
        None => Change::Added,
        Some(old) if *old == entry => Change::Unchanged,
        Some(_) => Change::Replaced,
    };
    servers.insert(name.to_string(), entry);
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| not_config(&e.to_string()))?;
    text.push('\n');
    Ok((text, change))
}

/// Merges the entry into the file at `path` and writes it atomically (a temporary file in the
/// same directory, renamed over it); the previous file is kept as `<path>.bak`.
pub fn install(path: &Path, name: &str, entry: Value) -> Result<Change, InstallError> {
    let io = |what: &'static str, source: std::io::Error| InstallError::Io {
        what,
        path: path.display().to_string(),
        source,
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading", e)),
    };
    let (text, change) = merge(existing.as_deref(), path, name, entry)?;
    if change == Change::Unchanged {
        return Ok(change);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    if existing.is_some() {
        let mut backup = path.as_os_str().to_owned();
        backup.push(".bak");
        std::fs::copy(path, PathBuf::from(backup)).map_err(|e| io("backing up", e))?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.platinum-{}", std::process::id()));
    let written = std::fs::write(&tmp, text.as_bytes()).and_then(|()| {
        // Keep the permissions of the file being replaced (~/.claude.json is private).
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing", e));
    }
    Ok(change)
}

/// The equivalent one-line `claude mcp add` command.
pub fn claude_command(name: &str, connection: &Connection, scope: Scope) -> String {
    let scope = match scope {
        Scope::User => "user",
        Scope::Project => "project",
    };
    match connection {
        Connection::Stdio { command, env } => {
            let env: String = env.iter().map(|(k, v)| format!(" -e {k}={v}")).collect();
            format!("claude mcp add -s {scope} {name}{env} -- {command} mcp")
        }
        Connection::Http { url } => format!(
            "claude mcp add --transport http -s {scope} {name} {url} -H \"Authorization: Bearer ${KEY_VAR}\""
        ),
    }
}

/// A Cursor install link (`cursor://…/mcp/install?name=…&config=<base64 of the entry>`).
pub fn cursor_deeplink(name: &str, connection: &Connection) -> String {
    use base64::Engine as _;
    let config = base64::engine::general_purpose::STANDARD
        .encode(entry(Client::Cursor, connection).to_string());
    let config: String = config
        .bytes()
        .map(|b| match b {
            b'+' => "%2B".to_string(),
            b'/' => "%2F".to_string(),
            b'=' => "%3D".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    format!("cursor://anysphere.cursor-deeplink/mcp/install?name={name}&config={config}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio() -> Connection {
        Connection::Stdio {
            command: "/usr/local/bin/platinum".into(),
            env: vec![],
        }
    }

    fn http() -> Connection {
        Connection::Http {
            url: "http://127.0.0.1:7070/mcp".into(),
        }
    }

    #[test]
    fn entries_have_each_clients_shape() {
        assert_eq!(
            entry(Client::Claude, &stdio()),
            json!({"type": "stdio", "command": "/usr/local/bin/platinum", "args": ["mcp"]})
        );
        assert_eq!(
            entry(Client::Cursor, &stdio()),
            json!({"command": "/usr/local/bin/platinum", "args": ["mcp"]})
        );
        assert_eq!(
            entry(Client::Claude, &http()),
            json!({"type": "http", "url": "http://127.0.0.1:7070/mcp", "headers": {"Authorization": "Bearer ${PLATINUM_API_KEY}"}})
        );
        assert_eq!(
            entry(Client::Cursor, &http()),
            json!({"url": "http://127.0.0.1:7070/mcp", "headers": {"Authorization": "Bearer ${env:PLATINUM_API_KEY}"}})
        );
        assert_eq!(
            entry(Client::Windsurf, &http()),
            json!({"serverUrl": "http://127.0.0.1:7070/mcp", "headers": {"Authorization": "Bearer ${env:PLATINUM_API_KEY}"}})
        );
        let with_env = Connection::Stdio {
            command: "platinum".into(),
            env: vec![("PLATINUM_URL".into(), "http://h:1".into())],
        };
        assert_eq!(
            entry(Client::Windsurf, &with_env)["env"],
            json!({"PLATINUM_URL": "http://h:1"})
        );
    }

    #[test]
    fn merging_keeps_everything_else_in_order() {
        let path = Path::new("/x/.claude.json");
        let existing =
            r#"{"zeta": 1, "mcpServers": {"other": {"command": "x"}}, "alpha": {"deep": [1, 2]}}"#;
        let (text, change) = merge(
            Some(existing),
            path,
            "platinum",
            entry(Client::Claude, &stdio()),
        )
        .unwrap();
        assert_eq!(change, Change::Added);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["mcpServers"]["other"], json!({"command": "x"}));
        assert_eq!(v["alpha"], json!({"deep": [1, 2]}));
        assert_eq!(
            v["mcpServers"]["platinum"]["command"],
            "/usr/local/bin/platinum"
        );
        // Key order of the user's file is kept.
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["zeta", "mcpServers", "alpha"]);
        let (_, again) = merge(
            Some(&text),
            path,
            "platinum",
            entry(Client::Claude, &stdio()),
        )
        .unwrap();
        assert_eq!(again, Change::Unchanged);
        let (_, replaced) = merge(
            Some(&text),
            path,
            "platinum",
            entry(Client::Claude, &http()),
        )
        .unwrap();
        assert_eq!(replaced, Change::Replaced);
        let (text, _) = merge(None, path, "platinum", entry(Client::Claude, &http())).unwrap();
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn refuses_files_it_would_damage() {
        let path = Path::new("/x/mcp.json");
        for bad in ["not json", "[1]", r#"{"mcpServers": []}"#] {
            let err = merge(Some(bad), path, "platinum", json!({})).unwrap_err();
            assert!(
                matches!(err, InstallError::NotAConfig { .. }),
                "{bad}: {err}"
            );
        }
        assert!(
            config_path(
                Client::Windsurf,
                Scope::Project,
                Path::new("/h"),
                Path::new("/p")
            )
            .is_err()
        );
        assert_eq!(
            config_path(
                Client::Cursor,
                Scope::Project,
                Path::new("/h"),
                Path::new("/p")
            )
            .unwrap(),
            Path::new("/p/.cursor/mcp.json")
        );
    }

    #[test]
    fn install_writes_atomically_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mcp.json");
        assert_eq!(
            install(&path, "platinum", entry(Client::Cursor, &stdio())).unwrap(),
            Change::Added
        );
        std::fs::write(
            &path,
            r#"{"mcpServers": {"mine": {"command": "a"}}, "keep": true}"#,
        )
        .unwrap();
        assert_eq!(
            install(&path, "platinum", entry(Client::Cursor, &http())).unwrap(),
            Change::Added
        );
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            (
                v["keep"].clone(),
                v["mcpServers"]["mine"]["command"].clone()
            ),
            (json!(true), json!("a"))
        );
        let backup = std::fs::read_to_string(dir.path().join("sub/mcp.json.bak")).unwrap();
        assert!(backup.contains("\"mine\"") && !backup.contains("platinum"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[test]
    fn one_liners() {
        assert_eq!(
            claude_command("platinum", &stdio(), Scope::User),
            "claude mcp add -s user platinum -- /usr/local/bin/platinum mcp"
        );
        assert_eq!(
            claude_command("platinum", &http(), Scope::Project),
            "claude mcp add --transport http -s project platinum http://127.0.0.1:7070/mcp -H \"Authorization: Bearer $PLATINUM_API_KEY\""
        );
        let link = cursor_deeplink("platinum", &stdio());
        let config = link
            .strip_prefix("cursor://anysphere.cursor-deeplink/mcp/install?name=platinum&config=")
            .expect("deeplink prefix");
        let config = config
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=");
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(config)
            .unwrap();
        let entry_json: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(entry_json, entry(Client::Cursor, &stdio()));
    }
}
