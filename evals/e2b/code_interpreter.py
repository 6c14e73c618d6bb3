"""The code interpreter through `e2b-code-interpreter`: stateful Python runs, stdout/stderr
callbacks, errors with name/value/traceback, rich results (text, HTML, matplotlib PNG, display),
per-run env vars, an interrupted run, contexts (create, list, restart, remove) and JavaScript."""

import base64
import threading
import time

from common import check, raises, step
from e2b import NotFoundException, TimeoutException
from e2b_code_interpreter import Sandbox

sbx = Sandbox.create(timeout=600)
try:
    with step("state survives between runs"):
        check(sbx.run_code("x = 41").error is None, "assign")
        ex = sbx.run_code("x + 1")
        check(ex.text == "42" and ex.results[0].is_main_result, f"{ex}")
        check(ex.execution_count is not None and ex.execution_count >= 2, f"count {ex.execution_count}")

    with step("stdout and stderr stream to callbacks"):
        out, err = [], []
        ex = sbx.run_code(
            "import sys, os\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nos.system('echo from a child')",
            on_stdout=lambda m: out.append(m.line),
            on_stderr=lambda m: err.append(m.line),
        )
        check("".join(ex.logs.stdout) == "to stdout\nfrom a child\n", f"{ex.logs}")
        check("".join(ex.logs.stderr) == "to stderr\n", f"{ex.logs}")
        check("".join(out) == "to stdout\nfrom a child\n" and "".join(err) == "to stderr\n", f"{out} {err}")

    with step("errors carry name, value and traceback"):
        seen = []
        ex = sbx.run_code("def f():\n    return 1 / 0\nf()", on_error=seen.append)
        check(ex.error is not None and ex.error.name == "ZeroDivisionError", f"{ex.error}")
        check(ex.error.value == "division by zero", ex.error.value)
        check("line 2, in f" in ex.error.traceback and "1 / 0" in ex.error.traceback, ex.error.traceback)
        check(seen and seen[0].name == "ZeroDivisionError", "on_error")
        check(sbx.run_code("x").text == "41", "state kept after an error")
        check(sbx.run_code("def broken(:").error.name == "SyntaxError", "syntax error")

    with step("rich results: HTML, matplotlib PNG, display"):
        ex = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
        check(ex.results[0].html and "<table" in ex.results[0].html and ex.text, f"{ex.results}")
        ex = sbx.run_code(
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('t')\nplt.show()"
        )
        pngs = [r.png for r in ex.results if r.png]
        check(len(pngs) == 1, f"one figure: {[r.formats() for r in ex.results]}")
        check(base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n"), "a PNG")
        ex = sbx.run_code("display('shown'); 7")
        check([r.text for r in ex.results] == ["shown", "7"], f"{[r.text for r in ex.results]}")
        check(ex.results[1].is_main_result and not ex.results[0].is_main_result, "main result")

    with step("env vars per run"):
        ex = sbx.run_code("import os; os.environ.get('RUN_ONLY')", envs={"RUN_ONLY": "yes"})
        check(ex.text == "yes", f"{ex.text}")
        check(sbx.run_code("os.environ.get('RUN_ONLY') is None").text == "True", "reset after the run")

    with step("an interrupted run leaves the context usable"):
        started = time.monotonic()
        raises(TimeoutException, lambda: sbx.run_code("import time\nwhile True: time.sleep(0.1)", timeout=3), "timeout")
        check(time.monotonic() - started < 20, "timed out promptly")
        ex = sbx.run_code("x * 2")
        check(ex.text == "82", f"state after interrupt: {ex}")

    with step("contexts: create, list, restart, remove"):
        ctx = sbx.create_code_context(cwd="/tmp")
        check(ctx.language == "python" and ctx.cwd == "/tmp", f"{ctx}")
        check(sbx.run_code("import os; os.getcwd()", context=ctx).text == "/tmp", "cwd")
        sbx.run_code("y = 5", context=ctx)
        check(sbx.run_code("'y' in globals()").text == "False", "contexts are separate")
        check(ctx.id in [c.id for c in sbx.list_code_contexts()], "listed")
        sbx.restart_code_context(ctx)
        ex = sbx.run_code("y", context=ctx)
        check(ex.error is not None and ex.error.name == "NameError", "restart cleared the state")
        sbx.remove_code_context(ctx)
        check(ctx.id not in [c.id for c in sbx.list_code_contexts()], "removed")
        raises(NotFoundException, lambda: sbx.run_code("1", context=ctx), "removed context")

    with step("JavaScript"):
        ex = sbx.run_code("const greeting = 'hi'; console.log(greeting); 6 * 7", language="javascript")
        check(ex.text == "42" and ex.logs.stdout == ["hi\n"], f"{ex}")
        check(sbx.run_code("greeting.toUpperCase()", language="javascript").text == "HI", "JS state")
        ex = sbx.run_code("null.x", language="javascript")
        check(ex.error is not None and ex.error.name == "TypeError", f"{ex.error}")
        js = sbx.create_code_context(language="javascript")
        check(js.language == "javascript", f"{js}")
        check(sbx.run_code("await Promise.resolve(3)", context=js).text == "3", "top-level await")

    with step("sandbox killed during a run"):
        threading.Timer(2, lambda: Sandbox.kill(sbx.sandbox_id)).start()
        started = time.monotonic()
        e = raises(Exception, lambda: sbx.run_code("import time; time.sleep(60)"), "killed mid-run")
        check(time.monotonic() - started < 30, f"ended promptly ({e!r})")
        check(not sbx.is_running(), "gone")
finally:
    Sandbox.kill(sbx.sandbox_id)
