//! The `platinum` binary as a user runs it: `platinum up` in the foreground with the scriptable
//! flags, then the client subcommands against it, then SIGTERM.

use platinum_testkit::up::UpProcess;
use platinum_testkit::{platinum_bin, processes_mentioning, temp_root};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The server's key (strong enough: weak keys stop the server at start).
const ENV_KEY: &str = "pt_cli_test_key_from_env_0123456789abcdef";

fn cli(up: &UpProcess, key: &str, args: &[&str]) -> Output {
    Command::new(platinum_bin())
        .args(args)
        .env("PLATINUM_URL", &up.url)
        .env("PLATINUM_API_KEY", key)
        .env_remove("PLATINUM_DATA_DIR")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_and_the_cli_drives_sandboxes() {
    let data = tempfile::Builder::new()
        .prefix("platinum-cli-")
        .tempdir_in(temp_root())
        .unwrap();
    let up = UpProcess::start(data.path(), ENV_KEY, None).await.unwrap();
    // The environment's key was used, so no key file was written.
    assert!(!up.data.as_path().join("api-key").exists());

    let key = ENV_KEY;
    let created: Value = serde_json::from_str(&stdout(&cli(
        &up,
        key,
        &["sandbox", "create", "--json", "-e", "FOO=bar"],
    )))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "running");

    // exec streams output and exits with the command's code.
    let o = cli(
        &up,
        key,
        &["sandbox", "exec", &id, "--", "echo $FOO; exit 5"],
    );
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "bar\n");
    let j: Value = serde_json::from_str(&stdout(&cli(
        &up,
        key,
        &[
            "sandbox",
            "exec",
            &id,
            "--json",
            "--",
            "python3",
            "-c",
            "print(6*7)",
        ],
    )))
    .unwrap();
    assert_eq!(j["stdout"], "42\n");

    // cp both ways.
    let local = up.data.as_path().join("local.txt");
    std::fs::write(&local, "from the host\n").unwrap();
    stdout(&cli(
        &up,
        key,
        &[
            "sandbox",
            "cp",
            local.to_str().unwrap(),
            &format!("{id}:docs/in.txt"),
        ],
    ));
    let back = up.data.as_path().join("back.txt");
    stdout(&cli(
        &up,
        key,
        &[
            "sandbox",
            "cp",
            &format!("{id}:/home/user/docs/in.txt"),
            back.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "from the host\n");

    let list: Value =
        serde_json::from_str(&stdout(&cli(&up, key, &["sandbox", "ls", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // A wrong key: a clear error and a failing exit code.
    let o = cli(&up, "wrong", &["sandbox", "ls"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // API keys: create (E2B form), list without secrets, rotate, revoke; a revoked key fails.
    let created: Value = serde_json::from_str(&stdout(&cli(
        &up,
        key,
        &[
            "keys", "create", "--name", "e2b", "--format", "e2b", "--json",
        ],
    )))
    .unwrap();
    let e2b_key = created["key"].as_str().unwrap().to_string();
    let e2b_id = created["id"].as_str().unwrap().to_string();
    let hex = e2b_key.strip_prefix("e2b_").unwrap();
    assert!(hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    let plain = stdout(&cli(&up, &e2b_key, &["keys", "create", "--name", "ci"]));
    let ci_key = plain.trim().to_string();
    assert!(ci_key.starts_with("pt_") && !ci_key.contains(char::is_whitespace));
    let listed = stdout(&cli(&up, &ci_key, &["keys", "ls", "--json"]));
    let keys: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 3, "{listed}");
    assert!(!listed.contains(&e2b_key) && !listed.contains(&ci_key) && !listed.contains(key));
    let rotated: Value = serde_json::from_str(&stdout(&cli(
        &up,
        key,
        &["keys", "rotate", &e2b_id, "--json"],
    )))
    .unwrap();
    let new_e2b = rotated["key"].as_str().unwrap();
    assert!(new_e2b.starts_with("e2b_") && new_e2b != e2b_key);
    assert!(!cli(&up, &e2b_key, &["keys", "ls"]).status.success());
    let ci_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked: Value = serde_json::from_str(&stdout(&cli(
        &up,
        key,
        &["keys", "revoke", "--json", &ci_id],
    )))
    .unwrap();
    assert_eq!(revoked[0]["revoked"], true);
    let o = cli(&up, &ci_key, &["keys", "ls"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unauthorized"));
    let o = cli(&up, key, &["keys", "revoke", "nosuchkey"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("api_key_not_found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Templates from a Dockerfile: the context is packed and uploaded once, the log streams,
    // a sandbox of the template has the copied file and the build's result; an unchanged
    // rebuild uploads nothing and runs nothing; a failing build exits 1 naming the step.
    let ctx = up.data.as_path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from the context\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:12\nCOPY hello.txt /opt/app/\nENV MODE=cli\nRUN echo \"$MODE\" > /opt/app/mode\n",
    )
    .unwrap();
    let dockerfile = ctx.join("Dockerfile");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "template",
            "build",
            "clitpl",
            "-f",
            dockerfile.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cli(&up, key, &args)
    };
    let first = build(&[]);
    let log = stdout(&first);
    assert!(
        log.contains("COPY") && log.contains("> /opt/app/mode"),
        "{log}"
    );
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(err.contains("uploading the build context"), "{err}");
    let again = build(&[]);
    let log = stdout(&again);
    assert!(log.contains("CACHED RUN (as root)"), "{log}");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("unchanged") && err.contains("0 run"), "{err}");
    let ls = stdout(&cli(&up, key, &["template", "ls"]));
    assert!(ls.contains("clitpl") && ls.contains("custom"), "{ls}");
    let made: Value = serde_json::from_str(&stdout(&cli(
        &up,
        key,
        &["sandbox", "create", "--json", "--template", "clitpl"],
    )))
    .unwrap();
    let tid = made["id"].as_str().unwrap().to_string();
    let o = cli(
        &up,
        key,
        &[
            "sandbox",
            "exec",
            &tid,
            "--",
            "cat /opt/app/hello.txt /opt/app/mode; echo $MODE",
        ],
    );
    assert_eq!(stdout(&o), "hello from the context\ncli\ncli\n");
    let o = cli(&up, key, &["template", "rm", "clitpl"]);
    assert!(!o.status.success(), "deleting a template in use is refused");
    stdout(&cli(&up, key, &["sandbox", "rm", &tid]));
    stdout(&cli(&up, key, &["template", "rm", "clitpl"]));
    std::fs::write(&dockerfile, "FROM debian:12\nRUN echo nope; exit 4\n").unwrap();
    let failed = build(&[]);
    assert_eq!(failed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("step 1 exited with code 4"), "{err}");

    let rm: Value =
        serde_json::from_str(&stdout(&cli(&up, key, &["sandbox", "rm", "--json", &id]))).unwrap();
    assert_eq!(rm[0]["deleted"], true);
    let o = cli(&up, key, &["sandbox", "rm", &id]);
    assert!(!o.status.success());

    // SIGTERM: a clean exit.
    let mut up = up;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = up.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < until,
            "platinum up did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(processes_mentioning(up.data.as_path()).is_empty());
}
