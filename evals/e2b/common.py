"""Helpers shared by the Python E2B SDK conformance flows.

The flows are ordinary user code: they use the official `e2b` / `e2b-code-interpreter` packages
configured only through the environment (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY), as
`run.sh` sets it up. Each flow exits non-zero on the first failed check.
"""

import os
import sys
import time
import uuid
from contextlib import contextmanager


def check(condition, what):
    """Fails the flow with `what` unless `condition` holds."""
    if not condition:
        raise AssertionError(what)


def raises(exception, fn, what):
    """Runs `fn` and returns the exception it raised, which must be an `exception`."""
    try:
        result = fn()
    except exception as e:
        return e
    except Exception as e:  # noqa: BLE001 - report the wrong type, not a crash
        raise AssertionError(f"{what}: expected {exception.__name__}, got {type(e).__name__}: {e}")
    raise AssertionError(f"{what}: expected {exception.__name__}, got result {result!r}")


def wait_until(condition, what, timeout=30.0, every=0.5):
    """Polls `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def step(name):
    """Times one step and names it in failures."""
    started = time.monotonic()
    try:
        yield
    except BaseException:
        print(f"  FAILED in step {name!r}", file=sys.stderr, flush=True)
        raise
    print(f"  ok {name} ({time.monotonic() - started:.1f}s)", flush=True)


def tag():
    """A label unique to this run, for metadata filters."""
    return f"{os.path.basename(sys.argv[0]).split('.')[0]}-{uuid.uuid4().hex[:8]}"


def upload_limit():
    """The server's upload limit in bytes, when the runner knows it (E2B_FLOW_UPLOAD_LIMIT)."""
    value = os.environ.get("E2B_FLOW_UPLOAD_LIMIT")
    return int(value) if value else None
