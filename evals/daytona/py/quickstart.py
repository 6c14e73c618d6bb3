"""Quick start, sync and async: create, code_run, exec, directories, get by id and name, delete."""

import uuid

from common import async_client, check, client, expect_error, main_sync_async
from daytona import (
    CreateSandboxFromSnapshotParams,
    DaytonaNotFoundError,
    DaytonaProcessExecutionTimeoutError,
)


def sync_flow():
    d = client()
    name = f"qs-{uuid.uuid4().hex[:8]}"
    s = d.create(CreateSandboxFromSnapshotParams(name=name, labels={"flow": "quickstart"}))
    try:
        check(s.state.value == "started", "create returns started", s.state)
        check(s.name == name and not s.toolbox_proxy_url.endswith("/"), "name and toolbox url", (s.name, s.toolbox_proxy_url))
        check(isinstance(s.cpu, int) and isinstance(s.memory, int) and isinstance(s.disk, int), "int resources")
        r = s.process.code_run("import sys\nprint(6*7)\nprint('oops', file=sys.stderr)")
        check((r.exit_code, r.result) == (0, "42\noops\n"), "code_run", (r.exit_code, r.result))
        r = s.process.code_run("import sys; print(sys.argv[1:]); sys.exit(4)", params=__import__("daytona").CodeRunParams(argv=["a", "b c"]))
        check((r.exit_code, r.result) == (4, "['a', 'b c']\n"), "code_run argv + exit", (r.exit_code, r.result))
        r = s.process.exec("echo hello; echo err 1>&2; exit 3")
        check((r.exit_code, r.result) == (3, "hello\nerr\n"), "exec merges stderr, keeps exit code", (r.exit_code, r.result))
        r = s.process.exec("python -c 'import sys; print(sys.version_info[0])'")
        check((r.exit_code, r.result) == (0, "3\n"), "`python` is Python 3", (r.exit_code, r.result))
        r = s.process.exec("pwd; echo $GREETING", cwd="/tmp", env={"GREETING": "hi"})
        check(r.result == "/tmp\nhi\n", "exec cwd + env", r.result)
        r = s.process.exec("echo 'unbalanced")
        check(r.exit_code != 0, "syntax error is an exit code, not a failure", r)
        e = expect_error(lambda: s.process.exec("echo before; sleep 30", timeout=2), DaytonaProcessExecutionTimeoutError, "exec timeout")
        check("timeout" in str(e).lower(), "the exec timeout's message says timeout", str(e))
        big = s.process.exec("head -c 3000000 /dev/zero | tr '\\0' x")
        check(len(big.result) == 3_000_000, "huge output arrives whole", len(big.result))
        check(s.get_user_home_dir() == "/home/user", "home dir")
        check(s.get_work_dir() == "/home/user", "work dir")
        check(d.get(s.id).id == s.id and d.get(name).id == s.id, "get by id and name")
        # The language label drives get(): a sandbox created for python stays python.
        check(d.get(name).labels.get("code-toolbox-language") == "python", "language label")
    finally:
        d.delete(s)
    expect_error(lambda: d.get(s.id), DaytonaNotFoundError, "deleted sandbox is gone")


async def async_flow():
    async with async_client() as d:
        s = await d.create()
        try:
            r = await s.process.code_run("print(1 + 1)")
            check((r.exit_code, r.result) == (0, "2\n"), "async code_run", r)
            r = await s.process.exec("uname -s")
            check(r.result == "Linux\n", "async exec", r.result)
            check((await d.get(s.id)).state.value == "started", "async get")
        finally:
            await d.delete(s)


main_sync_async("python quickstart (sync + async)", sync_flow, async_flow)
