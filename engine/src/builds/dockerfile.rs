//! Dockerfiles as build requests: what Daytona's `Image` sends and what
//! `platinum template build -f Dockerfile` reads.
//!
//! One stage. `FROM` names the base ([`super::base`]); `RUN` (shell or exec form), `ENV`,
//! `ARG` with a default (an environment variable, like `ENV`), `WORKDIR` and `USER` become the
//! steps of the same name; `COPY` and local `ADD` copy from the build context, which must have
//! been uploaded as one archive (`context`); `CMD` and `ENTRYPOINT` become the start command.
//! `LABEL`, `EXPOSE`, `HEALTHCHECK`, `STOPSIGNAL`, `VOLUME` and `MAINTAINER` are accepted and
//! have no effect; anything else (a second `FROM`, `ONBUILD`, `SHELL`, `ADD` of a URL,
//! `COPY --from`) is refused by name. Steps run as root unless a `USER` says otherwise, as in
//! Docker.
//!
//! The syntax is Docker's line grammar: `\` continues a line, `#` starts a comment line, an
//! instruction's arguments are a JSON array (exec form, read with `serde_json`) or words
//! (shell form, split with `shlex` where the instruction takes words). The `dockerfile-parser`
//! crate was tried first; it rejects the JSON form of `COPY`, which is what Daytona's SDK
//! writes.

use std::collections::BTreeMap;

use super::model::{BuildStep, StepAction};
use crate::error::{Error, Result};

/// What a Dockerfile asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The `FROM` image.
    pub from_image: String,
    /// The steps, in order.
    pub steps: Vec<BuildStep>,
    /// `ENTRYPOINT` and `CMD`, joined.
    pub start_cmd: Option<String>,
}

fn bad(line: usize, why: impl std::fmt::Display) -> Error {
    Error::InvalidRequest(format!("Dockerfile line {line}: {why}"))
}

fn step(action: StepAction) -> BuildStep {
    BuildStep {
        action,
        force: false,
    }
}

/// The logical lines: continuations joined, blank and comment lines dropped; each with the
/// number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && trimmed.starts_with('#') {
            continue;
        }
        let (n, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                current = Some((n, acc));
            }
            None => {
                acc.push_str(trimmed);
                lines.push((n, acc));
            }
        }
    }
    lines.extend(current);
    lines
}

/// Arguments in exec form (a JSON array of strings), when they are.
fn exec_form(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    t.starts_with('[')
        .then(|| serde_json::from_str::<Vec<String>>(t).ok())
        .flatten()
}

/// A shell or exec form as a shell command line.
fn command(args: &str) -> String {
    match exec_form(args) {
        Some(words) => shlex::try_join(words.iter().map(String::as_str)).unwrap_or_default(),
        None => args.trim().to_string(),
    }
}

/// Splits leading `--name=value` flags off `args`.
fn flags(args: &str) -> (BTreeMap<String, String>, &str) {
    let mut rest = args.trim_start();
    let mut found = BTreeMap::new();
    while let Some(flag) = rest.strip_prefix("--") {
        let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
        let (name, value) = flag[..end].split_once('=').unwrap_or((&flag[..end], ""));
        found.insert(name.to_string(), value.to_string());
        rest = flag[end..].trim_start();
    }
    (found, rest)
}

/// `KEY=value ...` or `KEY value` (shell-quoted values unquoted).
fn env_pairs(line: usize, raw: &str) -> Result<BTreeMap<String, String>> {
    let words = shlex::split(raw).ok_or_else(|| bad(line, format!("cannot split {raw:?}")))?;
    let mut vars = BTreeMap::new();
    if words.len() >= 2 && !words[0].contains('=') {
        vars.insert(words[0].clone(), words[1..].join(" "));
        return Ok(vars);
    }
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| bad(line, format!("{w:?} is not KEY=value")))?;
        vars.insert(k.to_string(), v.to_string());
    }
    if vars.is_empty() {
        return Err(bad(line, "ENV needs KEY=value"));
    }
    Ok(vars)
}

/// Sources and destination of `COPY`/`ADD`, in either form.
fn copy_paths(line: usize, args: &str) -> Result<(Vec<String>, String)> {
    let words = match exec_form(args) {
        Some(w) => w,
        None => shlex::split(args).ok_or_else(|| bad(line, format!("cannot split {args:?}")))?,
    };
    match words.split_last() {
        Some((dest, srcs)) if !srcs.is_empty() => Ok((
            srcs.iter()
                .map(|s| s.trim_start_matches("./").to_string())
                .collect(),
            dest.clone(),
        )),
        _ => Err(bad(line, "COPY needs a source and a destination")),
    }
}

/// Parses `text`; `context` is the key of the uploaded build context that `COPY` reads from.
pub fn parse(text: &str, context: Option<&str>) -> Result<Parsed> {
    let mut from_image: Option<String> = None;
    let mut steps = Vec::new();
    let (mut entrypoint, mut cmd) = (None, None);
    for (n, line) in logical_lines(text) {
        let (word, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = word.to_ascii_uppercase();
        if instruction != "FROM" && instruction != "ARG" && from_image.is_none() {
            return Err(bad(n, "the first instruction must be FROM"));
        }
        match instruction.as_str() {
            "FROM" => {
                if from_image.is_some() {
                    return Err(bad(
                        n,
                        "multi-stage builds (a second FROM) are not supported",
                    ));
                }
                let (_, rest) = flags(args);
                let image = rest
                    .split_whitespace()
                    .next()
                    .ok_or_else(|| bad(n, "FROM needs an image"))?;
                from_image = Some(image.to_string());
            }
            "RUN" => steps.push(step(StepAction::Run {
                command: command(flags(args).1),
                user: None,
            })),
            "ENV" => steps.push(step(StepAction::Env {
                vars: env_pairs(n, args)?,
            })),
            "ARG" => {
                if let Some((k, v)) = args.trim().split_once('=') {
                    let vars = BTreeMap::from([(k.to_string(), v.trim_matches('"').to_string())]);
                    steps.push(step(StepAction::Env { vars }));
                }
            }
            "COPY" | "ADD" => {
                let (flags, rest) = flags(args);
                if flags.contains_key("from") {
                    return Err(bad(n, "COPY --from (multi-stage) is not supported"));
                }
                let (srcs, dest) = copy_paths(n, rest)?;
                if srcs.iter().any(|s| s.contains("://")) {
                    return Err(bad(n, "ADD of a URL is not supported; RUN curl instead"));
                }
                let files = context.ok_or_else(|| {
                    bad(
                        n,
                        format!("{instruction} needs the build context, and none was uploaded"),
                    )
                })?;
                let mode = flags
                    .get("chmod")
                    .map(|m| {
                        u32::from_str_radix(m, 8)
                            .map_err(|_| bad(n, format!("--chmod={m} is not octal")))
                    })
                    .transpose()?;
                for src in srcs {
                    steps.push(step(StepAction::Copy {
                        files: files.to_string(),
                        src: Some(src),
                        dest: dest.clone(),
                        user: flags.get("chown").cloned(),
                        mode,
                    }));
                }
            }
            "WORKDIR" => steps.push(step(StepAction::Workdir {
                path: args.trim().to_string(),
            })),
            "USER" => steps.push(step(StepAction::User {
                name: args.trim().to_string(),
            })),
            "ENTRYPOINT" => entrypoint = Some(command(args)),
            "CMD" => cmd = Some(command(args)),
            "LABEL" | "EXPOSE" | "HEALTHCHECK" | "STOPSIGNAL" | "VOLUME" | "MAINTAINER" => {}
            other => return Err(bad(n, format!("{other} is not supported"))),
        }
    }
    let from_image = from_image.ok_or_else(|| bad(0, "there is no FROM"))?;
    // Docker runs as root until a USER says otherwise; the builder's default user is `user`.
    let mut user = "root".to_string();
    for s in &mut steps {
        match &mut s.action {
            StepAction::User { name } => user = name.clone(),
            StepAction::Run { user: u, .. } => *u = Some(user.clone()),
            _ => {}
        }
    }
    if !steps
        .iter()
        .any(|s| matches!(s.action, StepAction::User { .. }))
    {
        // So the start command runs as root too, as Docker's would.
        steps.push(step(StepAction::User { name: user }));
    }
    let start_cmd = match (entrypoint, cmd) {
        (Some(e), Some(c)) => Some(format!("{e} {c}")),
        (e, c) => e.or(c),
    };
    Ok(Parsed {
        from_image,
        steps,
        start_cmd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(p: &Parsed) -> Vec<StepAction> {
        p.steps.iter().map(|s| s.action.clone()).collect()
    }

    #[test]
    fn daytona_images_become_steps() {
        // What Daytona's `Image.debian_slim("3.12").pip_install(["six"])...` sends.
        let p = parse(
            "FROM python:3.12.10-slim-bookworm\n\
             RUN apt-get update\n\
             RUN python -m pip install six\n\
             ENV A='1 2'\n\
             ENV B=3 C=\"x y\"\n\
             WORKDIR /home/daytona\n\
             COPY [\"etc/hostname\", \"/app/h\"]\n\
             COPY --chown=user:user --chmod=755 ./bin /usr/local/bin/\n\
             # a comment\n\
             CMD [\"python3\", \"-m\", \"http.server\", \\\n  \"8000\"]\n",
            Some("ctx"),
        )
        .unwrap();
        assert_eq!(p.from_image, "python:3.12.10-slim-bookworm");
        assert_eq!(p.start_cmd.as_deref(), Some("python3 -m http.server 8000"));
        let a = actions(&p);
        assert_eq!(
            a[0],
            StepAction::Run {
                command: "apt-get update".into(),
                user: Some("root".into())
            }
        );
        assert_eq!(
            a[2],
            StepAction::Env {
                vars: [("A".to_string(), "1 2".to_string())].into()
            }
        );
        assert_eq!(
            a[3],
            StepAction::Env {
                vars: [
                    ("B".to_string(), "3".to_string()),
                    ("C".to_string(), "x y".to_string())
                ]
                .into()
            }
        );
        assert_eq!(
            a[4],
            StepAction::Workdir {
                path: "/home/daytona".into()
            }
        );
        assert_eq!(
            a[5],
            StepAction::Copy {
                files: "ctx".into(),
                src: Some("etc/hostname".into()),
                dest: "/app/h".into(),
                user: None,
                mode: None
            }
        );
        assert_eq!(
            a[6],
            StepAction::Copy {
                files: "ctx".into(),
                src: Some("bin".into()),
                dest: "/usr/local/bin/".into(),
                user: Some("user:user".into()),
                mode: Some(0o755)
            }
        );
        assert_eq!(
            a[7],
            StepAction::User {
                name: "root".into()
            }
        );
    }

    #[test]
    fn users_apply_to_later_runs() {
        let p = parse("FROM debian:12\nRUN a\nUSER user\nRUN b\n", None).unwrap();
        let a = actions(&p);
        assert!(matches!(&a[0], StepAction::Run { user: Some(u), .. } if u == "root"));
        assert!(matches!(&a[2], StepAction::Run { user: Some(u), .. } if u == "user"));
        assert_eq!(a.len(), 3, "no extra USER when the file has one");
    }

    #[test]
    fn unsupported_instructions_are_refused_by_name() {
        for (file, want) in [
            ("RUN x\n", "FROM"),
            ("FROM a\nFROM b\n", "multi-stage"),
            ("FROM a\nCOPY x /y\n", "build context"),
            ("FROM a\nONBUILD RUN x\n", "ONBUILD"),
            ("FROM a\nADD https://example.com/x /y\n", "URL"),
            ("", "FROM"),
        ] {
            let e = parse(file, None).unwrap_err().to_string();
            assert!(e.contains(want), "{file:?}: {e}");
        }
        assert!(parse("FROM a\nLABEL x=y\nEXPOSE 80\n", None).is_ok());
        let e = parse("FROM a\nCOPY --from=b /x /y\n", Some("c")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
