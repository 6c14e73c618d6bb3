"""Language servers through the Python SDK, with the Python server (pylsp) running in the
sandbox: create_lsp_server, start (twice: a no-op), did_open, document_symbols, completions,
did_close, stop; sandbox_symbols refused as pylsp has no workspace symbol search; errors for a
server not started and an unsupported language. (The TypeScript SDK's flow drives
typescript-language-server.)"""

from common import check, client, expect_error, main
from daytona import DaytonaError
from daytona.common.lsp_server import LspCompletionPosition

PY = """class Greeter:
    def hello(self, name):
        return "hi " + name


def make_greeter():
    return Greeter()


make_greeter().
"""


def body():
    d = client()
    s = d.create()
    try:
        s.fs.create_folder("/home/user/proj", "755")
        s.fs.upload_file(PY.encode(), "/home/user/proj/app.py")

        py = s.create_lsp_server("python", "proj")  # relative: in the user's home, as the SDK's examples
        e = expect_error(lambda: py.did_open("/home/user/proj/app.py"), DaytonaError, "not started yet")
        check("not started" in str(e), "says it is not started", str(e))
        py.start()
        py.start()  # starting a running server is a no-op
        py.did_open("/home/user/proj/app.py")
        symbols = py.document_symbols("/home/user/proj/app.py")
        names = {(x.name, x.kind) for x in symbols}
        check(("Greeter", 5) in names and ("make_greeter", 12) in names, "document symbols", names)
        greeter = next(x for x in symbols if x.name == "Greeter")
        check(greeter.location.range.start.line == 0 and greeter.location.uri == "file:///home/user/proj/app.py", "symbol location", greeter)
        done = py.completions("/home/user/proj/app.py", LspCompletionPosition(line=9, character=15))
        labels = [i.label for i in done.items]
        check(any(label.startswith("hello") for label in labels), "completions after `make_greeter().`", labels[:20])
        e = expect_error(lambda: py.sandbox_symbols("make_greeter"), DaytonaError, "pylsp has no workspace symbols")
        check("workspace symbol" in str(e), "says what is missing", str(e))
        py.did_close("/home/user/proj/app.py")
        py.stop()
        expect_error(lambda: py.document_symbols("/home/user/proj/app.py"), DaytonaError, "stopped")
        expect_error(lambda: s.create_lsp_server("cobol", "proj").start(), DaytonaError, "unsupported language")
        left = s.process.exec("pgrep -f '[p]ylsp' || true").result.strip()
        check(left == "", "no language server left running", left)
    finally:
        d.delete(s)


main("lsp", body)
