"""Stateful code interpreter, sync and async: state kept in the default context and in a created
one, separate contexts kept apart, stdout/stderr/error streaming, timeouts, contexts listed and
deleted."""

from common import async_sandbox, check, expect_error, main_sync_async, sandbox
from daytona import DaytonaTimeoutError


def sync_flow():
    with sandbox() as s:
        ci = s.code_interpreter
        r = ci.run_code("x = 21")
        check(r.error is None and r.stdout == "", "assignment", r)
        out = []
        r = ci.run_code("import sys\nprint(x * 2)\nprint('warn', file=sys.stderr)", on_stdout=lambda m: out.append(m.output))
        check(r.stdout == "42\n" and r.stderr == "warn\n" and "".join(out) == "42\n", "default context keeps state", r)
        r = ci.run_code("1 / 0")
        check(r.error is not None and r.error.name == "ZeroDivisionError", "error", r.error)
        ctx = ci.create_context(cwd="/tmp")
        r = ci.run_code("import os\nprint(os.getcwd())\ny = 'mine'", context=ctx)
        check(r.stdout == "/tmp\n", "context cwd", r)
        r = ci.run_code("print('x' in dir(), y)", context=ctx)
        check(r.stdout == "False mine\n", "contexts are separate", r)
        r = ci.run_code("import os\nprint(os.environ['ONLY_NOW'])", envs={"ONLY_NOW": "yes"})
        check(r.stdout == "yes\n", "envs", r)
        expect_error(lambda: ci.run_code("import time\ntime.sleep(30)", timeout=2), DaytonaTimeoutError, "timeout")
        check(ci.run_code("print(x)").stdout == "21\n", "a timed-out run leaves the context usable")
        check(ctx.id in [c.id for c in ci.list_contexts()], "list contexts")
        ci.delete_context(ctx)
        check(ctx.id not in [c.id for c in ci.list_contexts()], "delete context")


async def async_flow():
    async with async_sandbox() as s:
        await s.code_interpreter.run_code("n = 5")
        r = await s.code_interpreter.run_code("print(n ** 2)")
        check(r.stdout == "25\n", "async interpreter", r)


main_sync_async("python interpreter (sync + async)", sync_flow, async_flow)
