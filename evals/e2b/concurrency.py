"""Two clients on one sandbox at once (two SDK instances, threads): commands, files and code
runs interleave and each client gets its own results."""

from concurrent.futures import ThreadPoolExecutor

from common import check, step
from e2b_code_interpreter import Sandbox

first = Sandbox.create(timeout=300)
try:
    second = Sandbox.connect(first.sandbox_id)

    def client(n, sbx):
        for i in range(5):
            r = sbx.commands.run(f"echo client{n}-{i}; sleep 0.2; echo done{n}-{i} >&2")
            check(r.stdout == f"client{n}-{i}\n" and r.stderr == f"done{n}-{i}\n", f"client {n}: {r}")
            path = f"/home/user/c{n}/f{i}.txt"
            sbx.files.write(path, f"{n}:{i}" * 1000)
            check(sbx.files.read(path) == f"{n}:{i}" * 1000, f"client {n} file {i}")
        ctx = sbx.create_code_context()
        sbx.run_code(f"mine = {n}", context=ctx)
        for _ in range(3):
            check(sbx.run_code("mine", context=ctx).text == str(n), f"client {n} context")
        return n

    with step("two clients interleave commands, files and code"):
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda a: client(*a), [(1, first), (2, second), (3, first), (4, second)]))
        check(results == [1, 2, 3, 4], f"{results}")
        listing = sorted(e.name for e in first.files.list("/home/user"))
        check(all(f"c{n}" in listing for n in range(1, 5)), f"{listing}")

    with step("both clients share one default context in order"):
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda s: s.run_code("counter = globals().get('counter', 0) + 1"), [first, second]))
        check(first.run_code("counter").text == "2", "runs on one context queue, none is lost")
finally:
    Sandbox.kill(first.sandbox_id)
