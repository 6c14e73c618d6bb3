"""Processes through the Python SDK: commands.run in the foreground and background, stdout and
stderr callbacks, exit codes and CommandExitException, envs, cwd, user, timeouts, kill, stdin
(send, close, stream), list and connect, a process killed by a signal, a bad cwd, and a sandbox
killed while a command streams (the stream must end with an error, not hang)."""

import threading
import time

from common import check, raises, step
from e2b import (
    CommandExitException,
    InvalidArgumentException,
    Sandbox,
    SandboxNotRunningException,
    TimeoutException,
)

sbx = Sandbox.create(timeout=300)
try:
    with step("foreground run with callbacks"):
        out, err = [], []
        r = sbx.commands.run(
            "echo one; echo two >&2; python -c 'print(1+1)'",
            on_stdout=out.append,
            on_stderr=err.append,
        )
        check(r.exit_code == 0 and r.stdout == "one\n2\n" and r.stderr == "two\n", f"{r}")
        check("".join(out) == r.stdout and "".join(err) == r.stderr, "callbacks saw the output")
        # (`python` is Python 3, as in E2B's images.)

    with step("non-zero exit raises CommandExitException"):
        e = raises(CommandExitException, lambda: sbx.commands.run("echo partial; echo bad >&2; exit 3"), "exit 3")
        check(e.exit_code == 3 and e.stdout == "partial\n" and e.stderr == "bad\n", f"{e.exit_code} {e.stdout!r}")
        check(e.error == "exit status 3", f"error {e.error!r}")

    with step("envs, cwd, user"):
        r = sbx.commands.run("echo $FOO; pwd; whoami", envs={"FOO": "bar"}, cwd="/tmp", user="root")
        check(r.stdout == "bar\n/tmp\nroot\n", f"{r.stdout!r}")
        check(sbx.commands.run("whoami; pwd").stdout == "user\n/home/user\n", "default user and home")
        raises(InvalidArgumentException, lambda: sbx.commands.run("pwd", cwd="/no/such/dir"), "bad cwd")

    with step("timeout kills the command"):
        started = time.monotonic()
        raises(TimeoutException, lambda: sbx.commands.run("sleep 30", timeout=2), "timeout")
        check(time.monotonic() - started < 15, "timed out promptly")
        time.sleep(1)
        left = [p for p in sbx.commands.list() if "sleep 30" in " ".join([p.cmd, *p.args])]
        check(left == [], f"the timed-out process was killed: {left}")

    with step("a process killed by a signal"):
        e = raises(CommandExitException, lambda: sbx.commands.run("kill -9 $$"), "self kill")
        check(e.exit_code == -1 and e.error == "signal: killed", f"{e.exit_code} {e.error!r}")

    with step("background, list, connect, kill"):
        h = sbx.commands.run("for i in 1 2 3; do echo tick $i; sleep 1; done; sleep 100", background=True)
        procs = {p.pid: p for p in sbx.commands.list()}
        check(h.pid in procs, "listed")
        check(procs[h.pid].cmd == "/bin/bash" and procs[h.pid].args[-1].startswith("for i"), f"{procs[h.pid]}")
        seen = []
        attached = sbx.commands.connect(h.pid)
        for stdout, _, _ in attached:
            if stdout:
                seen.append(stdout)
            if "tick 3" in "".join(seen):
                break
        check("tick 3" in "".join(seen), f"connected output {seen}")
        check(sbx.commands.kill(h.pid) is True, "kill")
        e = raises(CommandExitException, h.wait, "killed background command")
        check(e.error == "signal: killed", f"{e.error!r}")
        check(sbx.commands.kill(h.pid) is False, "killing a dead process is False")

    with step("stdin: send, close, stream"):
        h = sbx.commands.run("read line; echo got:$line", background=True, stdin=True)
        sbx.commands.send_stdin(h.pid, "hello\n")
        check(h.wait().stdout == "got:hello\n", "send_stdin")
        h = sbx.commands.run("wc -c", background=True, stdin=True)
        sbx.commands.send_stdin(h.pid, "abcd")
        sbx.commands.close_stdin(h.pid)
        check(h.wait().stdout.strip() == "4", "close_stdin")
        h = sbx.commands.run("cat", background=True, stdin=True)
        sbx.commands.stream_input(h.pid, iter([b"x" * 10, "y" * 5]))
        sbx.commands.close_stdin(h.pid)
        check(h.wait().stdout == "x" * 10 + "y" * 5, "stream_input")
        r = sbx.commands.run("cat", stdin=False, timeout=10)
        check(r.stdout == "", "stdin=False reads nothing")

    with step("large output"):
        r = sbx.commands.run("head -c 3000000 /dev/zero | tr '\\0' 'a'")
        check(len(r.stdout) == 3_000_000, f"{len(r.stdout)} bytes")

    with step("sandbox killed while a command streams"):
        h = sbx.commands.run("echo started; sleep 120", background=True)
        threading.Timer(2, lambda: Sandbox.kill(sbx.sandbox_id)).start()
        started = time.monotonic()
        e = raises(SandboxNotRunningException, h.wait, "wait on a killed sandbox")
        check(isinstance(e, TimeoutException) and "was killed" in str(e), f"the SDK says the sandbox was killed: {e}")
        check(time.monotonic() - started < 30, "the stream ended promptly")
        check(not sbx.is_running(), "gone")
finally:
    Sandbox.kill(sbx.sandbox_id)
