"""Background sessions, sync and async: state carried between commands, sync and async exec,
command status, logs (plain and streamed over WebSocket with the 01/02 markers), input, errors,
delete."""

import asyncio
import time

from common import async_sandbox, check, expect_error, main_sync_async, sandbox
from daytona import (
    DaytonaCommandAlreadyCompletedError,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaSessionEndedError,
    SessionExecuteRequest,
)


def sync_flow():
    with sandbox() as s:
        p = s.process
        p.create_session("work")
        expect_error(lambda: p.create_session("work"), DaytonaError, "duplicate session")
        p.execute_session_command("work", SessionExecuteRequest(command="cd /tmp && export FOO=bar && f() { echo fn:$1; }"))
        r = p.execute_session_command("work", SessionExecuteRequest(command="pwd; echo $FOO; f x; echo warn >&2; exit_code_test() { return 5; }; exit_code_test"))
        check(r.stdout == "/tmp\nbar\nfn:x\n" and r.stderr == "warn\n" and r.exit_code == 5, "state persists; sync exec", r)
        check("\x01\x01\x01/tmp\n" in r.output and "\x02\x02\x02warn\n" in r.output, "marked combined output", r.output)
        bad = p.execute_session_command("work", SessionExecuteRequest(command="echo 'unbalanced"))
        check(bad.exit_code == 2, "syntax error fails only that command", bad)

        a = p.execute_session_command("work", SessionExecuteRequest(
            command="for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 1; done", run_async=True))
        check(a.exit_code is None and a.cmd_id, "async exec returns at once", a)
        check(p.get_session_command("work", a.cmd_id).exit_code is None, "running: exitCode null")
        out, err = [], []
        asyncio.run(p.get_session_command_logs_async("work", a.cmd_id, out.append, err.append))
        check("".join(out) == "out1\nout2\nout3\n" and "".join(err) == "err1\nerr2\nerr3\n", "streamed logs demux", (out, err))
        check(p.get_session_command("work", a.cmd_id).exit_code == 0, "finished: exitCode 0")
        logs = p.get_session_command_logs("work", a.cmd_id)
        check(logs.stdout == "out1\nout2\nout3\n" and logs.stderr == "err1\nerr2\nerr3\n", "plain logs", logs)

        r = p.execute_session_command("work", SessionExecuteRequest(command="read -r line; echo got:$line", run_async=True))
        for _ in range(50):
            try:
                p.send_session_command_input("work", r.cmd_id, "typed\n")
                break
            except DaytonaError as e:  # queued behind nothing, but give the shell a moment
                if "not started" not in str(e):
                    raise
                time.sleep(0.1)
        for _ in range(100):
            if p.get_session_command("work", r.cmd_id).exit_code is not None:
                break
            time.sleep(0.1)
        check(p.get_session_command_logs("work", r.cmd_id).stdout == "got:typed\n", "input reaches the command")
        expect_error(lambda: p.send_session_command_input("work", r.cmd_id, "late\n"), DaytonaCommandAlreadyCompletedError, "input after end", code="COMMAND_ALREADY_COMPLETED")

        sessions = p.list_sessions()
        check([x.session_id for x in sessions] == ["work"] and len(p.get_session("work").commands) == 5, "list/get", sessions)
        expect_error(lambda: p.get_session("nope"), DaytonaNotFoundError, "unknown session")
        expect_error(lambda: p.get_session_command("work", "nope"), DaytonaNotFoundError, "unknown command")

        # A command that never ends, then the session is deleted under it: no process is left.
        p.execute_session_command("work", SessionExecuteRequest(command="sleep 1000 & sleep 1001", run_async=True))
        p.delete_session("work")
        expect_error(lambda: p.get_session("work"), DaytonaNotFoundError, "deleted session")
        left = s.process.exec("pgrep -f 'sleep 100[01]' || true").result
        check(left == "", "deleting a session kills what it started", left)
        p.create_session("ender")
        r = p.execute_session_command("ender", SessionExecuteRequest(command="exit 7"))
        check(r.exit_code == 7, "exit ends the session with its code", r)
        expect_error(lambda: p.execute_session_command("ender", SessionExecuteRequest(command="true")), DaytonaSessionEndedError, "ended session", code="SESSION_ENDED")


async def async_flow():
    async with async_sandbox() as s:
        p = s.process
        await p.create_session("a")
        r = await p.execute_session_command("a", SessionExecuteRequest(command="echo one; echo two >&2; sleep 1; echo three", run_async=True))
        out, err = [], []
        await p.get_session_command_logs_async("a", r.cmd_id, out.append, err.append)
        check("".join(out) == "one\nthree\n" and "".join(err) == "two\n", "async streamed logs", (out, err))
        r = await p.execute_session_command("a", SessionExecuteRequest(command="echo $((6*7))"))
        check(r.stdout == "42\n" and r.exit_code == 0, "async sync exec", r)
        await p.delete_session("a")


main_sync_async("python sessions (sync + async)", sync_flow, async_flow)
