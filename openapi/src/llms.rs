//! `llms.txt` and `llms-full.txt` (llmstxt.org): what a language model needs to use Platinum.
//!
//! Both are rendered from the code: the REST part from [`crate::document`], the MCP part from
//! the MCP server's tool list, resource templates and client configuration shapes. The prose
//! around them is here. The copies checked in at the repository root are compared with this
//! output by `openapi/tests/drift.rs` (`UPDATE_LLMS=1` rewrites them), and the same text is
//! served at `/llms.txt` and `/llms-full.txt`.
//!
//! `llms.txt` follows the llmstxt.org layout: one H1, a blockquote summary, paragraphs and lists
//! without headings, then H2 sections of `- [title](url): notes` links, `## Optional` last.

use platinum_mcp::PlatinumMcp;
use platinum_mcp::install::{self, Client, Connection, Scope};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Where the repository's files are browsed (links in llms.txt).
const REPO: &str = env!("CARGO_PKG_REPOSITORY");
/// The default server address.
const SERVER: &str = "http://127.0.0.1:7070";

const SUMMARY: &str = "> Platinum runs sandboxes for AI agents on your own machine: every sandbox is its own \
microVM (Debian with python3, node, git; user `user` with passwordless sudo, home /home/user). Drive it over \
MCP (`platinum mcp` on stdio, or Streamable HTTP at `/mcp`) or the REST API (`/v1`, OpenAPI 3.1 at \
`/openapi.json`). Both take the API key as `Authorization: Bearer <key>`.";

const INTRO: &str = "\
Start a server with `./platinum.sh up` in a checkout (Debian 12, root). It serves on \
http://127.0.0.1:7070 and prints the API key once; the key is also in `/var/lib/platinum/api-key`. \
`platinum mcp` talks to that server, or starts one itself when none runs.

The loop: create a sandbox (it boots in seconds), run commands or code in it, move files in and \
out, delete it. A sandbox is deleted after its `timeout_secs` (default 300; 0 = never), so delete \
it yourself when done or give it a longer timeout. Relative paths are in /home/user. Services \
inside a sandbox are reachable at `/v1/sandboxes/{id}/ports/{port}/` with the API key, or, \
without it, at the edge `/edge/{id}/{port}/` (or `{port}-{id}.<domain>`) with a token from \
`POST /v1/sandboxes/{id}/ports/{port}/tokens` (header `X-Platinum-Edge-Token` or \
`?platinum_token=`, which a browser keeps as a cookie) or for a port made public with \
`POST /v1/sandboxes/{id}/expose`; a paused sandbox is resumed by its edge traffic. \
WebSockets and streamed bodies pass through, over HTTP/1.1 or HTTP/2 (h2c).

Failures have a stable code. REST answers `{\"code\", \"message\"}` with the matching HTTP status; an \
MCP tool returns a result with `isError: true` and the text `<code>: <message>`. Codes include \
`sandbox_not_found`, `invalid_state`, `file_not_found`, `exec_timeout`, `port_not_open`, \
`invalid_arguments`, `cancelled`.";

fn tools() -> Vec<rmcp::model::Tool> {
    let mut tools = PlatinumMcp::tools();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    tools
}

/// The first sentence of a description.
fn first_sentence(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(i) => flat[..=i].to_string(),
        None => flat,
    }
}

/// `llms.txt`.
pub fn llms_txt() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Platinum\n\n{SUMMARY}\n\n{INTRO}\n");
    let _ = writeln!(s, "MCP tools:\n");
    for t in tools() {
        let d = first_sentence(t.description.as_deref().unwrap_or_default());
        let _ = writeln!(s, "- `{}`: {d}", t.name);
    }
    let doc = document_value();
    let _ = writeln!(
        s,
        "\nREST endpoint groups (under `/v1`: `/v1/sandboxes/...` and `/v1/keys`):\n"
    );
    for tag in doc["tags"].as_array().into_iter().flatten() {
        let name = tag["name"].as_str().unwrap_or_default();
        if name == "system" {
            continue;
        }
        let _ = writeln!(
            s,
            "- {name}: {}",
            tag["description"].as_str().unwrap_or_default()
        );
    }
    let _ = writeln!(
        s,
        "\n## Docs\n\n\
         - [Full reference](llms-full.txt): every MCP tool and REST endpoint with its arguments and results, client setup\n\
         - [README]({REPO}/blob/main/README.md): install, CLI, REST examples, adding Platinum to Claude Code, Cursor and Windsurf\n\
         - [OpenAPI 3.1 document]({REPO}/blob/main/openapi/openapi.json): the REST API, machine-readable (also served at /openapi.json)\n\
         \n## Agent skill\n\n\
         - [Platinum skill]({REPO}/blob/main/skills/platinum/SKILL.md): when and how an agent should use Platinum; install with `npx skills add {}`\n\
         \n## Optional\n\n\
         - [Architecture]({REPO}/blob/main/docs/architecture.md): the planes, the host-guest protocol, states and on-disk layout",
        REPO.trim_start_matches("https://github.com/")
    );
    s
}

fn document_value() -> Value {
    serde_json::to_value(crate::document()).unwrap_or_default()
}

/// The name a `$ref` points at.
fn ref_name(r: &str) -> &str {
    r.rsplit('/').next().unwrap_or(r)
}

/// A schema as a short type description: `string`, `integer`, `array of FileInfo`, `Sandbox`,
/// `map of string`, `one of `a`, `b``, `string or null`.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return format!("`{}`", ref_name(r));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema[key].as_array() {
            let parts: Vec<String> = alts.iter().map(type_of).collect();
            return parts.join(" or ");
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        let vs: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("null")))
            .collect();
        return format!("one of {}", vs.join(", "));
    }
    if let Some(c) = schema.get("const") {
        return format!("`{}`", c.as_str().unwrap_or_default());
    }
    let one = |t: &str| -> String {
        match t {
            "array" => format!("array of {}", type_of(&schema["items"])),
            "object" => match schema.get("additionalProperties") {
                Some(Value::Object(inner)) => {
                    format!("map of {}", type_of(&Value::Object(inner.clone())))
                }
                _ => "object".into(),
            },
            other => other.to_string(),
        }
    };
    match &schema["type"] {
        Value::String(t) => one(t),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(one)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `- `name` (type, required): description` for each property of an object schema.
fn properties(s: &mut String, schema: &Map<String, Value>, show_required: bool) {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        let _ = writeln!(s, "- ({})", type_of(&Value::Object(schema.clone())));
        return;
    };
    for (name, p) in props {
        let mut kind = type_of(p);
        if show_required && required.contains(&name.as_str()) {
            kind.push_str(", required");
        }
        let desc = p["description"].as_str().map(one_line).unwrap_or_default();
        let _ = writeln!(s, "- `{name}` ({kind}): {desc}");
    }
}

fn mcp_section(s: &mut String, doc: &Value) {
    let components = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let stdio = Connection::Stdio {
        command: "platinum".into(),
        env: vec![],
    };
    let http = Connection::Http {
        url: format!("{SERVER}/mcp"),
    };
    let _ = writeln!(
        s,
        "## MCP\n\n\
         Two transports, one server. stdio: the client starts `platinum mcp`, which relays to the running \
         server (`PLATINUM_URL`, default {SERVER}; key from `PLATINUM_API_KEY` or the server's key file) \
         or, when none answers, starts an embedded one. Streamable HTTP: `{SERVER}/mcp` with \
         `Authorization: Bearer <key>`; remote hosts must be allowed with `platinum up --mcp-allowed-host`. \
         Protocol revisions 2024-11-05 through 2026-07-28 are negotiated per client.\n\n\
         `platinum mcp install claude|cursor|windsurf [--http URL] [--scope user|project] [--print]` merges \
         the entry into the client's config file (other entries are kept; the old file is saved as `.bak`).\n"
    );
    let _ = writeln!(
        s,
        "Claude Code:\n\n```sh\n{}\n{}\n```\n",
        install::claude_command("platinum", &stdio, Scope::User),
        install::claude_command("platinum", &http, Scope::User)
    );
    for (client, title, file) in [
        (
            Client::Claude,
            "Claude Code",
            "`~/.claude.json` or a project's `.mcp.json`",
        ),
        (
            Client::Cursor,
            "Cursor",
            "`~/.cursor/mcp.json` or a project's `.cursor/mcp.json`",
        ),
        (
            Client::Windsurf,
            "Windsurf",
            "`~/.codeium/windsurf/mcp_config.json`",
        ),
    ] {
        let config = serde_json::json!({ "mcpServers": {
            "platinum": install::entry(client, &stdio),
            "platinum-http": install::entry(client, &http),
        }});
        let pretty = serde_json::to_string_pretty(&config).unwrap_or_default();
        let _ = writeln!(s, "{title} ({file}):\n\n```json\n{pretty}\n```\n");
    }
    let _ = writeln!(
        s,
        "Long commands send their output as progress notifications while they run (when the request \
         has a `progressToken`); cancelling a `run_command` or `run_code` request kills the command or \
         interrupts the code. Images (PNG, JPEG, GIF, WebP files; figures from `run_code`) come back as \
         image content blocks.\n\n### Tools\n"
    );
    for t in tools() {
        let _ = writeln!(s, "#### `{}`\n", t.name);
        if let Some(d) = &t.description {
            let _ = writeln!(s, "{}\n", one_line(d));
        }
        if let Some(a) = &t.annotations {
            let mut hints = Vec::new();
            if a.read_only_hint == Some(true) {
                hints.push("read-only");
            }
            if a.destructive_hint == Some(true) {
                hints.push("destructive");
            }
            if a.idempotent_hint == Some(true) {
                hints.push("idempotent");
            }
            if !hints.is_empty() {
                let _ = writeln!(s, "Hints: {}.\n", hints.join(", "));
            }
        }
        let _ = writeln!(s, "Arguments:\n");
        properties(s, &t.input_schema, true);
        if let Some(out) = &t.output_schema {
            let _ = writeln!(s, "\nResult (`structuredContent`):\n");
            properties(s, out, false);
            // Types only the MCP server has (the others are under Schemas).
            if let Some(defs) = out.get("$defs").and_then(Value::as_object) {
                for (name, def) in defs {
                    if components.contains_key(name) {
                        continue;
                    }
                    if let Some(def) = def.as_object() {
                        let _ = writeln!(s, "\nwhere `{name}` is:\n");
                        properties(s, def, false);
                    }
                }
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "### Resources\n\n- `platinum://sandboxes`: all sandboxes (JSON)"
    );
    for t in platinum_mcp::resources::templates() {
        let desc = t.description.as_deref().unwrap_or_default();
        let _ = writeln!(s, "- `{}`: {desc}", t.uri_template);
    }
    let _ = writeln!(s);
}

fn rest_section(s: &mut String, doc: &Value) {
    let _ = writeln!(
        s,
        "## REST API\n\n\
         Base URL {SERVER}; every `/v1` request needs `Authorization: Bearer <key>`. JSON in and out; \
         errors are `{{\"code\", \"message\"}}`. The OpenAPI 3.1 document is at `/openapi.json`, an \
         interactive page at `/docs`.\n"
    );
    let tags = doc["tags"].as_array().cloned().unwrap_or_default();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for tag in &tags {
        let name = tag["name"].as_str().unwrap_or_default();
        let _ = writeln!(
            s,
            "### {name}\n\n{}\n",
            tag["description"].as_str().unwrap_or_default()
        );
        for (path, ops) in &paths {
            let Some(ops) = ops.as_object() else { continue };
            for (method, op) in ops {
                let has_tag = op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == name));
                if !has_tag {
                    continue;
                }
                operation(s, &method.to_uppercase(), path, op);
            }
        }
    }
    let _ = writeln!(s, "## Schemas\n");
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(s, "### `{name}`\n");
        if let Some(d) = schema["description"].as_str() {
            let _ = writeln!(s, "{}\n", one_line(d));
        }
        match schema.as_object() {
            Some(obj) if obj.contains_key("properties") => properties(s, obj, true),
            _ => {
                let _ = writeln!(s, "{}", type_of(schema));
            }
        }
        let _ = writeln!(s);
    }
}

fn operation(s: &mut String, method: &str, path: &str, op: &Value) {
    let summary = op["summary"].as_str().unwrap_or_default();
    let _ = writeln!(s, "#### `{method} {path}`: {summary}\n");
    if let Some(d) = op["description"].as_str() {
        let _ = writeln!(s, "{}\n", one_line(d));
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        let _ = writeln!(s, "Parameters:\n");
        for p in params {
            let required = if p["required"] == true {
                ", required"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "- `{}` ({}, {}{required}): {}",
                p["name"].as_str().unwrap_or_default(),
                p["in"].as_str().unwrap_or_default(),
                type_of(&p["schema"]),
                p["description"].as_str().map(one_line).unwrap_or_default()
            );
        }
        let _ = writeln!(s);
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        for (mime, c) in content {
            let _ = writeln!(s, "Body ({mime}): {}\n", type_of(&c["schema"]));
        }
    }
    let _ = writeln!(s, "Responses:\n");
    for (status, r) in op["responses"].as_object().into_iter().flatten() {
        let body = r["content"]
            .as_object()
            .and_then(|c| c.iter().next())
            .map(|(mime, c)| match c.get("schema") {
                Some(schema) => format!(" → {} ({mime})", type_of(schema)),
                None => format!(" ({mime})"),
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- {status}: {}{body}",
            r["description"].as_str().unwrap_or_default()
        );
    }
    let _ = writeln!(s);
}

/// `llms-full.txt`: the whole MCP and REST reference in one Markdown file.
pub fn llms_full_txt() -> String {
    let doc = document_value();
    let mut s = String::new();
    let _ = writeln!(s, "# Platinum: full reference\n\n{SUMMARY}\n\n{INTRO}\n");
    mcp_section(&mut s, &doc);
    rest_section(&mut s, &doc);
    while s.ends_with("\n\n") {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_render_briefly() {
        assert_eq!(
            type_of(&json!({"$ref": "#/components/schemas/Sandbox"})),
            "`Sandbox`"
        );
        assert_eq!(
            type_of(&json!({"type": ["string", "null"]})),
            "string or null"
        );
        assert_eq!(
            type_of(&json!({"type": "array", "items": {"$ref": "#/$defs/Entry"}})),
            "array of `Entry`"
        );
        assert_eq!(
            type_of(&json!({"type": "object", "additionalProperties": {"type": "string"}})),
            "map of string"
        );
        assert_eq!(
            type_of(&json!({"type": "string", "enum": ["a", "b"]})),
            "one of `a`, `b`"
        );
        assert_eq!(first_sentence("Run it. Then more."), "Run it.");
    }
}
