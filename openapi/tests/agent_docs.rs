//! `llms.txt` and the agent skill are well-formed and point at things that exist.
//!
//! - `llms.txt` has the llmstxt.org layout (one H1 first, a blockquote, no headings before the
//!   first H2, H2 sections made only of `- [title](url): notes` links, `## Optional` last), and
//!   every link resolves to a file of this repository.
//! - `skills/platinum/SKILL.md` has valid front matter (agentskills.io: `name` equal to its
//!   directory and made of `[a-z0-9-]`, a `description` of at most 1024 characters), stays short,
//!   names only tools the MCP server has and only REST paths the OpenAPI document has, and the
//!   `skills` CLI (`npx skills add <repo>`) finds it and installs it for Claude Code and Cursor.

use platinum_testkit::{agent_clients, repo_root};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The repository file a link points at, if it is one of ours.
fn local_target(url: &str) -> Option<PathBuf> {
    let ours = concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/");
    if let Some(path) = url.strip_prefix(ours) {
        return Some(repo_root().join(path));
    }
    (!url.contains("://")).then(|| repo_root().join(url))
}

#[test]
fn llms_txt_follows_llmstxt_org_and_its_links_resolve() {
    let text = platinum_openapi::llms::llms_txt();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("# ") && !lines[0].starts_with("## "),
        "H1 first"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("# ")).count(),
        1,
        "exactly one H1"
    );
    let first_content = lines[1..].iter().find(|l| !l.trim().is_empty()).unwrap();
    assert!(
        first_content.starts_with("> "),
        "a blockquote summary follows the H1"
    );
    let first_h2 = lines
        .iter()
        .position(|l| l.starts_with("## "))
        .expect("link sections");
    assert!(
        lines[..first_h2]
            .iter()
            .all(|l| !l.starts_with('#') || l.starts_with("# ")),
        "no headings between the summary and the first H2"
    );
    let link = |l: &str| -> Option<(String, String)> {
        let rest = l.strip_prefix("- [")?;
        let (title, rest) = rest.split_once("](")?;
        let (url, notes) = rest.split_once(')')?;
        (notes.is_empty() || notes.starts_with(": ")).then(|| (title.to_string(), url.to_string()))
    };
    let mut sections = Vec::new();
    let mut links = 0;
    for l in &lines[first_h2..] {
        if let Some(h) = l.strip_prefix("## ") {
            sections.push(h.to_string());
        } else if !l.trim().is_empty() {
            let (title, url) =
                link(l).unwrap_or_else(|| panic!("not a link line in a section: {l:?}"));
            let target = local_target(&url)
                .unwrap_or_else(|| panic!("{title}: {url} is not in this repository"));
            assert!(
                target.exists(),
                "{title}: {url} -> {} does not exist",
                target.display()
            );
            links += 1;
        }
    }
    assert!(links >= 4, "{links} links");
    if let Some(i) = sections.iter().position(|s| s == "Optional") {
        assert_eq!(i, sections.len() - 1, "## Optional comes last");
    }
    let full = platinum_openapi::llms::llms_full_txt();
    assert!(full.starts_with("# ") && full.contains("\n> "));
    for tool in platinum_mcp::PlatinumMcp::tools() {
        assert!(
            full.contains(&format!("#### `{}`", tool.name)),
            "llms-full.txt lacks {}",
            tool.name
        );
    }
}

/// The YAML front matter's top-level `key: value` lines.
fn front_matter(text: &str) -> Vec<(String, String)> {
    let body = text
        .strip_prefix("---\n")
        .expect("SKILL.md starts with front matter");
    let (yaml, _) = body
        .split_once("\n---\n")
        .expect("front matter ends with ---");
    yaml.lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn skill_has_valid_front_matter_and_names_real_tools_and_paths() {
    let dir = repo_root().join("skills/platinum");
    let text = std::fs::read_to_string(dir.join("SKILL.md")).unwrap();
    let fm = front_matter(&text);
    let get = |k: &str| fm.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let name = get("name").expect("name");
    assert_eq!(
        name,
        dir.file_name().unwrap().to_str().unwrap(),
        "name equals the directory"
    );
    assert!(
        name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--"),
        "name {name:?}"
    );
    let description = get("description").expect("description");
    assert!(
        (1..=1024).contains(&description.len()),
        "description length {}",
        description.len()
    );
    assert!(
        description.contains("Use it"),
        "the description says when to use it"
    );
    assert!(text.lines().count() < 500, "keep SKILL.md under 500 lines");

    let tools: BTreeSet<String> = platinum_mcp::PlatinumMcp::tools()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    let verbs = [
        "create_", "list_", "get_", "kill_", "pause_", "resume_", "run_", "read_", "write_",
        "stat_", "remove_", "move_", "preview_",
    ];
    let mut named = BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if verbs.iter().any(|v| word.starts_with(v)) && word.len() > 5 && word.contains('_') {
            named.insert(word.to_string());
        }
    }
    let unknown: Vec<_> = named.difference(&tools).collect();
    assert!(
        unknown.is_empty(),
        "SKILL.md names tools that do not exist: {unknown:?}"
    );
    assert!(
        named.len() >= 12,
        "SKILL.md should cover the tools: {named:?}"
    );

    let doc = serde_json::to_value(platinum_openapi::document()).unwrap();
    let templates: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let matches = |path: &str| {
        templates.iter().any(|t| {
            let (ts, ps): (Vec<&str>, Vec<&str>) =
                (t.split('/').collect(), path.split('/').collect());
            ts.len() == ps.len()
                && ts
                    .iter()
                    .zip(&ps)
                    .all(|(t, p)| t == p || t.starts_with('{'))
        })
    };
    for (i, _) in text.match_indices("/v1/") {
        let path: String = text[i..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '`' | '?' | ')'))
            .collect();
        let path = path.trim_end_matches('/');
        assert!(
            matches(path),
            "SKILL.md uses {path}, which the API does not have"
        );
    }
}

#[test]
fn skills_cli_finds_and_installs_the_skill() {
    let bin = agent_clients().join("npm/node_modules/.bin");
    let project = tempfile::tempdir().unwrap();
    let out = Command::new(bin.join("skills"))
        .args(["add"])
        .arg(repo_root())
        .args([
            "--skill",
            "platinum",
            "-a",
            "claude-code",
            "-a",
            "cursor",
            "-y",
        ])
        .current_dir(project.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("DISABLE_TELEMETRY", "1")
        .env("DO_NOT_TRACK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skills add failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = project.path().join(".agents/skills/platinum/SKILL.md");
    let same = std::fs::read_to_string(&installed).ok()
        == Some(std::fs::read_to_string(repo_root().join("skills/platinum/SKILL.md")).unwrap());
    assert!(same, "{} is not the skill", installed.display());
    assert!(
        project.path().join(".claude/skills/platinum").exists(),
        "linked for Claude Code"
    );
}
