"""Warm pools through the Python SDK: daytona.warm_pool.create("base", 1) (the pool fills in the
background until current_size is 1), list, a create that claims the warm sandbox (started, the
caller's env, its own hostname), the pool refilling, update (0 drains it), delete, and the
errors for a pool that is gone (the SDK's warm_pool service passes the API client's exceptions
through unwrapped, so those are what is expected)."""

import time

from common import check, client, expect_error, main
from daytona import CreateSandboxFromSnapshotParams, SandboxState
from daytona_api_client.exceptions import ApiException, NotFoundException


def wait_size(d, pool_id, n, seconds=300):
    """Waits until the pool has `n` warm sandboxes; returns it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        p = next(p for p in d.warm_pool.list() if p.id == pool_id)
        if p.current_size == n:
            return p
        time.sleep(0.5)
    raise AssertionError(f"pool {pool_id} never had {n} warm sandboxes")


def body():
    d = client()
    expect_error(lambda: d.warm_pool.create("no-such-snapshot", 1), NotFoundException, "unknown snapshot")
    pool = d.warm_pool.create("base", 1)
    try:
        check(pool.snapshot == "base" and pool.pool == 1 and pool.id.startswith("pool"), "created", pool)
        check(pool.id in [p.id for p in d.warm_pool.list()], "listed")
        expect_error(lambda: d.warm_pool.create("base", 1), ApiException, "a second pool of the same kind")
        wait_size(d, pool.id, 1)

        started = time.monotonic()
        s = d.create(CreateSandboxFromSnapshotParams(env_vars={"WHO": "warm"}, labels={"flow": "pools"}))
        claimed_in = time.monotonic() - started
        try:
            check(s.state == SandboxState.STARTED, "claimed sandbox started", s.state)
            check(s.process.exec("echo $WHO").result.strip() == "warm", "the caller's env")
            check(s.process.exec("hostname").result.strip() == s.id, "its own hostname")
            print(f"  (claim took {claimed_in * 1000:.0f} ms over the SDK)")
        finally:
            d.delete(s)
        wait_size(d, pool.id, 1)

        resized = d.warm_pool.update(pool.id, 0)
        check(resized.pool == 0, "resized to 0", resized)
        wait_size(d, pool.id, 0)
    finally:
        d.warm_pool.delete(pool.id)
    check(pool.id not in [p.id for p in d.warm_pool.list()], "deleted")
    expect_error(lambda: d.warm_pool.update(pool.id, 1), NotFoundException, "update of a deleted pool")
    expect_error(lambda: d.warm_pool.delete(pool.id), NotFoundException, "delete of a deleted pool")


main("python warm pools", body)
