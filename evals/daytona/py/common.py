"""Shared setup for the Daytona SDK conformance flows (Python).

The flows drive the unmodified `daytona` package against a Platinum server. The server and key
come from the real process environment, exactly as a Daytona user configures them:
DAYTONA_API_URL (e.g. http://127.0.0.1:7070/api) and DAYTONA_API_KEY (a Platinum API key).
"""

import asyncio
import os
import sys
import time
from contextlib import asynccontextmanager, contextmanager

from daytona import AsyncDaytona, Daytona, DaytonaConfig, DaytonaNotFoundError


def config() -> DaytonaConfig:
    return DaytonaConfig(
        api_key=os.environ["DAYTONA_API_KEY"],
        api_url=os.environ["DAYTONA_API_URL"],
        target="local",
    )


def client() -> Daytona:
    return Daytona(config())


def async_client() -> AsyncDaytona:
    return AsyncDaytona(config())


@contextmanager
def sandbox():
    """A fresh sandbox (default parameters) for the `with` block, deleted when it ends."""
    d = client()
    s = d.create()
    try:
        yield s
    finally:
        d.delete(s)


@asynccontextmanager
async def async_sandbox():
    """The async form of `sandbox()`: a fresh sandbox on an async client, deleted at the end."""
    async with async_client() as d:
        s = await d.create()
        try:
            yield s
        finally:
            await d.delete(s)


def delete_all(d: Daytona, sandboxes):
    """Deletes the sandboxes a flow made; ones already gone are fine."""
    for s in sandboxes:
        try:
            d.delete(s)
        except DaytonaNotFoundError:
            pass


def check(cond, what, detail=None):
    if not cond:
        raise AssertionError(f"{what}: {detail!r}" if detail is not None else what)


def expect_error(fn, cls, what, code=None):
    """Runs fn and requires a Daytona error of class `cls` (and `code`, if given)."""
    try:
        fn()
    except cls as e:
        if code is not None:
            check(getattr(e, "code", None) == code, f"{what}: error code", (e.code, str(e)))
        return e
    except Exception as e:  # noqa: BLE001 - report the wrong class clearly
        raise AssertionError(f"{what}: expected {cls.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"{what}: expected {cls.__name__}, nothing was raised")


def passed(flow: str, started: float):
    print(f"PASS {flow} ({time.time() - started:.1f}s)", flush=True)


def main(flow: str, body):
    started = time.time()
    try:
        body()
    except Exception:
        print(f"FAIL {flow}", flush=True)
        raise
    passed(flow, started)
    sys.exit(0)


def main_sync_async(flow: str, sync_flow, async_flow):
    """main() for a flow that runs `sync_flow()`, then the coroutine function `async_flow`."""

    def body():
        sync_flow()
        asyncio.run(async_flow())

    main(flow, body)
