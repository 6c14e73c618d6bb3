"""Platinum code-interpreter kernel for Python.

The engine uploads this file into a sandbox and runs one copy per code context (as
`python3 kernel.py`, stdin kept open). It keeps one persistent namespace and runs the cells the
engine sends, one at a time.

Protocol, one JSON object per line:

* engine -> kernel on stdin: ``{"id": str, "code": str, "env": {str: str}}``
* kernel -> engine on stdout: ``{"type": "ready", "language": "python", "pid": int}`` once, then
  per cell ``count{id, n}``, any number of ``stdout{id, text}`` / ``stderr{id, text}`` /
  ``result{id, data, main}`` (``data`` is a MIME bundle: ``text/plain``, ``text/html``,
  ``image/png`` as base64, ...), at most one ``error{id, name, value, traceback}``, and always
  ``done{id}`` last.

Output capture happens at the file-descriptor level: fds 1 and 2 are pipes read by two threads,
so ``print``, C extensions and child processes (``os.system``) are all reported. Before a cell's
result or error is reported, both pipes are drained up to a marker written after the cell, so
output always precedes the result. The protocol uses private duplicates of the original stdin
and stdout; user code sees /dev/null on fd 0.

SIGINT interrupts the running cell (``KeyboardInterrupt``) and is ignored between cells.
matplotlib uses the ``module://platinum_inline`` backend defined here: ``plt.show()`` and the end
of every cell turn open figures into ``image/png`` results. The value of a cell's last
expression is its main result (``repr`` as ``text/plain``, plus ``_repr_*_`` formats); top-level
``await`` works.
"""

import ast
import asyncio
import base64
import builtins
import codecs
import importlib.abc
import importlib.util
import inspect
import io
import json
import linecache
import os
import select
import signal
import sys
import threading
import traceback
import types

MARKER = b"\x00platinum-sync-" + os.urandom(8).hex().encode() + b"\x00"
SYNC_TIMEOUT = 10.0
# How long an unfinished line waits for its rest before it is reported.
COALESCE_SECONDS = 0.01

# (method, MIME type, binary) for IPython-style rich representations.
REPR_METHODS = [
    ("_repr_html_", "text/html", False),
    ("_repr_markdown_", "text/markdown", False),
    ("_repr_svg_", "image/svg+xml", False),
    ("_repr_png_", "image/png", True),
    ("_repr_jpeg_", "image/jpeg", True),
    ("_repr_pdf_", "application/pdf", True),
    ("_repr_latex_", "text/latex", False),
    ("_repr_json_", "application/json", False),
    ("_repr_javascript_", "application/javascript", False),
]


class Channel:
    """The protocol: JSON lines on a private copy of the original stdout."""

    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, msg):
        data = (json.dumps(msg) + "\n").encode("ascii")
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]


class Capture:
    """One redirected output fd, read on a thread and reported to the current cell."""

    def __init__(self, kernel, fd, kind):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.kernel = kernel
        self.fd = fd
        self.kind = kind
        self.read_end = read_end
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.synced = threading.Event()
        threading.Thread(target=self.run, name=f"capture-{kind}", daemon=True).start()

    def run(self):
        pending = b""
        while True:
            chunk = os.read(self.read_end, 65536)
            if not chunk:
                return
            pending += chunk
            # A line written in pieces (print writes the text, then the newline) is reported
            # whole when the rest follows within a moment.
            while not pending.endswith(b"\n") and len(pending) < 65536:
                if not select.select([self.read_end], [], [], COALESCE_SECONDS)[0]:
                    break
                more = os.read(self.read_end, 65536)
                if not more:
                    break
                pending += more
            while True:
                at = pending.find(MARKER)
                if at < 0:
                    break
                self.report(pending[:at], final=True)
                pending = pending[at + len(MARKER) :]
                self.synced.set()
            keep = partial_marker(pending)
            self.report(pending[: len(pending) - keep])
            pending = pending[len(pending) - keep :]

    def report(self, data, final=False):
        text = self.decoder.decode(data, final)
        if text:
            self.kernel.output(self.kind, text)

    def sync(self):
        """Waits until everything written to the fd so far has been reported."""
        self.synced.clear()
        os.write(self.fd, MARKER)
        self.synced.wait(SYNC_TIMEOUT)


def partial_marker(data):
    """Length of the longest suffix of ``data`` that starts the marker."""
    for n in range(min(len(data), len(MARKER) - 1), 0, -1):
        if MARKER.startswith(data[-n:]):
            return n
    return 0


def text_stream(fd):
    return io.TextIOWrapper(
        io.FileIO(fd, "w", closefd=False),
        encoding="utf-8",
        errors="replace",
        line_buffering=True,
        write_through=True,
    )


class InlineBackendFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Provides the ``platinum_inline`` matplotlib backend (Agg canvas, figures as results)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def find_spec(self, fullname, path, target=None):
        if fullname == "platinum_inline":
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from matplotlib.backend_bases import FigureManagerBase
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        kernel = self.kernel
        module.FigureCanvas = FigureCanvasAgg
        module.FigureManager = FigureManagerBase

        def show(*args, **kwargs):
            kernel.flush_figures()

        module.show = show


class Kernel:
    def __init__(self):
        self.channel = Channel(os.dup(1))
        self.requests = os.fdopen(os.dup(0), "rb")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        self.current = None
        self.count = 0
        self.captures = [Capture(self, 1, "stdout"), Capture(self, 2, "stderr")]
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = text_stream(1)
        sys.stderr = text_stream(2)
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
        self.namespace = main.__dict__
        builtins.display = self.display
        sys.path[0] = ""
        os.environ["MPLBACKEND"] = "module://platinum_inline"
        sys.meta_path.insert(0, InlineBackendFinder(self))
        self.loop = asyncio.new_event_loop()
        # SIGINT interrupts a running cell only; Python's own handler raises KeyboardInterrupt
        # without a frame of ours in the traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(self, kind, **fields):
        self.channel.send({"id": self.current, "type": kind, **fields})

    def output(self, kind, text):
        if self.current is not None:
            self.send(kind, text=text)

    def display(self, *objects):
        """``display(obj, ...)``: reports each object as a (non-main) result."""
        for obj in objects:
            self.send("result", data=mime_bundle(obj), main=False)

    def flush_figures(self):
        if "matplotlib.pyplot" not in sys.modules:
            return
        from matplotlib import pyplot
        from matplotlib._pylab_helpers import Gcf

        for manager in Gcf.get_all_fig_managers():
            self.send("result", data=figure_bundle(manager.canvas.figure), main=False)
        pyplot.close("all")

    def sync_output(self):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        for capture in self.captures:
            capture.sync()

    def serve(self):
        self.channel.send({"type": "ready", "language": "python", "pid": os.getpid()})
        while True:
            line = self.requests.readline()
            if not line:
                return
            try:
                request = json.loads(line)
            except ValueError as e:
                print(f"kernel: bad request: {e}", file=sys.__stderr__)
                continue
            self.execute(request)

    def execute(self, request):
        self.current = request.get("id")
        self.count += 1
        self.send("count", n=self.count)
        saved = apply_env(request.get("env") or {})
        try:
            value, error = self.run_cell(request.get("code", ""))
            self.sync_output()
            if error is not None:
                self.send("error", **describe_error(error))
            elif value is not None:
                builtins._ = value
                self.send("result", data=mime_bundle(value), main=True)
            self.flush_figures()
        except BaseException as e:
            # A failure of the kernel's own reporting (e.g. a figure that cannot render).
            self.send("error", **describe_error(e))
        finally:
            restore_env(saved)
            self.sync_output()
            self.send("done")
            self.current = None

    def run_cell(self, code):
        """Runs one cell; returns (value of the last expression, exception)."""
        filename = f"<cell-{self.count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        try:
            tree = compile(code, filename, "exec", ast.PyCF_ONLY_AST | flags)
        except (SyntaxError, ValueError, OverflowError) as e:
            return None, e
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            if tree.body:
                self.run(compile(tree, filename, "exec", flags))
            value = self.run(compile(last, filename, "eval", flags)) if last else None
            return value, None
        except BaseException as e:
            return None, e
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def run(self, compiled):
        result = eval(compiled, self.namespace)
        if compiled.co_flags & inspect.CO_COROUTINE:
            result = self.loop.run_until_complete(result)
        return result


def apply_env(env):
    saved = {}
    for key, value in env.items():
        saved[key] = os.environ.get(key)
        os.environ[key] = str(value)
    return saved


def restore_env(saved):
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def describe_error(error):
    tb = error.__traceback__
    # Start at the first frame of the cell itself; the kernel's own frames are noise.
    frame = tb
    while frame is not None and not frame.tb_frame.f_code.co_filename.startswith("<cell-"):
        frame = frame.tb_next
    shown = traceback.format_exception(type(error), error, frame)
    return {
        "name": type(error).__name__,
        "value": str(error),
        "traceback": "".join(shown),
    }


def mime_bundle(obj):
    data = {}
    if not isinstance(obj, type):
        bundle = call_repr(obj, "_repr_mimebundle_")
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        if isinstance(bundle, dict):
            data.update({k: encode(v, isinstance(v, bytes)) for k, v in bundle.items()})
        for method, mime, binary in REPR_METHODS:
            if mime in data:
                continue
            value = call_repr(obj, method)
            if isinstance(value, tuple):
                value = value[0]
            if value is not None:
                data[mime] = encode(value, binary)
        if "image/png" not in data and is_figure(obj):
            data.update(figure_bundle(obj))
    if "text/plain" not in data:
        try:
            data["text/plain"] = repr(obj)
        except Exception as e:
            data["text/plain"] = f"<unrepresentable {type(obj).__name__}: {e}>"
    return data


def call_repr(obj, method):
    fn = getattr(obj, method, None)
    if not callable(fn):
        return None
    try:
        return fn()
    except Exception:
        return None


def encode(value, binary):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii") if binary else value.decode("utf-8", "replace")
    if isinstance(value, (dict, list, str, int, float, bool)) or value is None:
        return value
    return str(value)


def is_figure(obj):
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(obj, figure.Figure)


def figure_bundle(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return {
        "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "text/plain": repr(figure),
    }


if __name__ == "__main__":
    Kernel().serve()
