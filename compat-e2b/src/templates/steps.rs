//! E2B build steps as the engine's: a pure translation of `TemplateBuildStartV2.steps`
//! (`{type, args, filesHash?, force?}`, as the SDKs' `Template` builders serialize them) into
//! [`BuildStep`]s. The engine checks what the steps say (commands, paths, users, variables);
//! this only checks their shape.
//!
//! | E2B `type` | `args` | engine |
//! |---|---|---|
//! | `RUN` | `[command, user?]` | [`StepAction::Run`] |
//! | `COPY` | `[src, dest, user ("" = none), mode (octal, "" = none)]` + `filesHash` | [`StepAction::Copy`] of the archive uploaded as `filesHash`, `src` relative to its root |
//! | `ENV` | `[name1, value1, name2, value2, ...]` | [`StepAction::Env`] |
//! | `WORKDIR` | `[path]` | [`StepAction::Workdir`] |
//! | `USER` | `[name]` | [`StepAction::User`] |

use platinum_engine::builds::model::{BuildStep, StepAction};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One step as E2B sends it (`TemplateStep`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct E2bStep {
    /// `RUN`, `COPY`, `ENV`, `WORKDIR` or `USER`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// `COPY`: the key its files were uploaded under.
    #[serde(default)]
    pub files_hash: Option<String>,
    /// Run it (and every later step) even when a cached layer has it.
    #[serde(default)]
    pub force: Option<bool>,
}

/// The engine's steps for E2B's; the error names the step (1-based) and what is wrong.
pub fn engine_steps(steps: &[E2bStep]) -> Result<Vec<BuildStep>, String> {
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let action =
                action(step).map_err(|e| format!("step {} ({}): {e}", i + 1, step.kind))?;
            Ok(BuildStep {
                action,
                force: step.force.unwrap_or(false),
            })
        })
        .collect()
}

/// `Some(arg)` unless it is empty (E2B's "not given").
fn given(arg: Option<&String>) -> Option<String> {
    arg.filter(|a| !a.is_empty()).cloned()
}

fn action(step: &E2bStep) -> Result<StepAction, String> {
    let args = step.args.as_deref().unwrap_or_default();
    let count = |range: std::ops::RangeInclusive<usize>, form: &str| {
        if range.contains(&args.len()) {
            Ok(())
        } else {
            Err(format!(
                "args must be {form}, got {} argument(s)",
                args.len()
            ))
        }
    };
    match step.kind.to_ascii_uppercase().as_str() {
        "RUN" => {
            count(1..=2, "[command, user?]")?;
            Ok(StepAction::Run {
                command: args[0].clone(),
                user: given(args.get(1)),
            })
        }
        "COPY" => {
            count(2..=4, "[src, dest, user?, mode?]")?;
            let files = step
                .files_hash
                .clone()
                .filter(|h| !h.is_empty())
                .ok_or("filesHash is required (upload the files first)")?;
            let mode = given(args.get(3))
                .map(|m| {
                    u32::from_str_radix(&m, 8)
                        .map_err(|_| format!("mode {m:?} is not an octal number like \"0755\""))
                })
                .transpose()?;
            Ok(StepAction::Copy {
                files,
                src: archive_path(&args[0]),
                dest: args[1].clone(),
                user: given(args.get(2)),
                mode,
            })
        }
        "ENV" => {
            if !args.len().is_multiple_of(2) {
                return Err(format!(
                    "args must be name, value pairs, got {} argument(s)",
                    args.len()
                ));
            }
            let vars: BTreeMap<String, String> = args
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect();
            Ok(StepAction::Env { vars })
        }
        "WORKDIR" => {
            count(1..=1, "[path]")?;
            Ok(StepAction::Workdir {
                path: args[0].clone(),
            })
        }
        "USER" => {
            count(1..=1, "[name]")?;
            Ok(StepAction::User {
                name: args[0].clone(),
            })
        }
        other => Err(format!(
            "unknown step type {other:?}: this server builds RUN, COPY, ENV, WORKDIR and USER steps"
        )),
    }
}

/// A `COPY` source as a path inside the uploaded archive, whose entries are named relative to
/// the build context: `./app` is `app`, and `.` (the whole context) is everything.
fn archive_path(src: &str) -> Option<String> {
    let mut path = src;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.trim_start_matches('/');
    }
    (!path.is_empty() && path != ".").then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(steps: serde_json::Value) -> Result<Vec<BuildStep>, String> {
        let steps: Vec<E2bStep> = serde_json::from_value(steps).unwrap();
        engine_steps(&steps)
    }

    #[test]
    fn every_step_type_maps() {
        let hash = "ab".repeat(32);
        // As the Python SDK serializes apt_install, copy, set_envs, set_workdir, set_user, run_cmd.
        let steps = parse(json!([
            {"type": "RUN", "args": ["apt-get update && apt-get install -y jq", "root"], "force": false},
            {"type": "COPY", "args": ["index.html", "/home/user/site/", "", ""], "force": false,
             "filesHash": hash, "forceUpload": null},
            {"type": "COPY", "args": ["./bin/tool", "/usr/local/bin/tool", "user:user", "0755"],
             "force": true, "filesHash": hash},
            {"type": "ENV", "args": ["A", "1", "B", "two words"], "force": null},
            {"type": "WORKDIR", "args": ["/app"]},
            {"type": "USER", "args": ["user"]},
            {"type": "RUN", "args": ["echo hi"]},
        ]))
        .unwrap();
        let actions: Vec<&StepAction> = steps.iter().map(|s| &s.action).collect();
        assert_eq!(
            actions,
            [
                &StepAction::Run {
                    command: "apt-get update && apt-get install -y jq".into(),
                    user: Some("root".into())
                },
                &StepAction::Copy {
                    files: hash.clone(),
                    src: Some("index.html".into()),
                    dest: "/home/user/site/".into(),
                    user: None,
                    mode: None
                },
                &StepAction::Copy {
                    files: hash.clone(),
                    src: Some("bin/tool".into()),
                    dest: "/usr/local/bin/tool".into(),
                    user: Some("user:user".into()),
                    mode: Some(0o755)
                },
                &StepAction::Env {
                    vars: BTreeMap::from([
                        ("A".into(), "1".into()),
                        ("B".into(), "two words".into())
                    ])
                },
                &StepAction::Workdir {
                    path: "/app".into()
                },
                &StepAction::User {
                    name: "user".into()
                },
                &StepAction::Run {
                    command: "echo hi".into(),
                    user: None
                },
            ]
        );
        let forced: Vec<bool> = steps.iter().map(|s| s.force).collect();
        assert_eq!(forced, [false, false, true, false, false, false, false]);
    }

    #[test]
    fn malformed_steps_are_refused_by_number() {
        let hash = "ab".repeat(32);
        for (steps, expected) in [
            (
                json!([{"type": "ADD", "args": ["x"]}]),
                "step 1 (ADD): unknown step type",
            ),
            (json!([{"type": "RUN"}]), "step 1 (RUN): args must be"),
            (
                json!([{"type": "RUN", "args": ["a"]}, {"type": "COPY", "args": ["a", "/b"]}]),
                "step 2 (COPY): filesHash is required",
            ),
            (
                json!([{"type": "COPY", "args": ["a", "/b", "", "rwx"], "filesHash": hash}]),
                "not an octal number",
            ),
            (json!([{"type": "ENV", "args": ["A"]}]), "name, value pairs"),
            (
                json!([{"type": "WORKDIR", "args": ["/a", "/b"]}]),
                "args must be [path]",
            ),
            (json!([{"type": "USER", "args": []}]), "args must be [name]"),
        ] {
            let e = parse(steps).unwrap_err();
            assert!(e.contains(expected), "{e:?} should contain {expected:?}");
        }
        assert_eq!(parse(json!([])).unwrap(), []);
    }

    #[test]
    fn copy_sources_are_paths_in_the_archive() {
        assert_eq!(archive_path("index.html").as_deref(), Some("index.html"));
        assert_eq!(archive_path("./src/*.py").as_deref(), Some("src/*.py"));
        assert_eq!(archive_path("././a").as_deref(), Some("a"));
        assert_eq!(archive_path("."), None);
        assert_eq!(archive_path("./"), None);
    }
}
