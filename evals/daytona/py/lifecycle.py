"""Control plane, sync and async: list with label/state filters and cursor paging, labels,
stop/start, archive, intervals (and autoStopInterval=1 really stopping the sandbox after a minute
without activity), ephemeral sandboxes, images, snapshots, volumes, preview links reaching a
server inside the sandbox, auth and error shapes, and deleting a sandbox mid-command."""

import asyncio
import os
import threading
import time
import uuid

import httpx
from common import async_client, check, client, config, expect_error, main
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaAuthenticationError,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    Image,
    ListSandboxesQuery,
    SandboxState,
)


def wait_state(d, sid, state, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            cur = d.get(sid).state.value
        except DaytonaNotFoundError:
            cur = "destroyed"
        if cur == state:
            return
        time.sleep(1)
    raise AssertionError(f"sandbox {sid} did not become {state} in {seconds}s")


def control_plane(d):
    tag = uuid.uuid4().hex[:8]
    a = d.create(CreateSandboxFromSnapshotParams(snapshot="base", labels={"suite": tag, "role": "a"}, auto_stop_interval=0))
    b = d.create(CreateSandboxFromImageParams(image="debian:12", labels={"suite": tag, "role": "b"}))
    try:
        check(a.snapshot == "base" and a.auto_stop_interval == 0, "snapshot + interval echoed", (a.snapshot, a.auto_stop_interval))
        check((b.auto_stop_interval, b.auto_archive_interval, b.auto_delete_interval) == (15, 10080, -1), "default intervals", b)
        mine = list(d.list(ListSandboxesQuery(labels={"suite": tag}, limit=1)))
        check(sorted(s.id for s in mine) == sorted([a.id, b.id]), "list pages with a cursor and filters labels", [s.id for s in mine])
        only_a = list(d.list(ListSandboxesQuery(labels={"suite": tag, "role": "a"})))
        check([s.id for s in only_a] == [a.id], "label filter")

        labels = a.set_labels({"suite": tag, "role": "a", "extra": "1"})
        check(labels.get("extra") == "1" and d.get(a.id).labels.get("extra") == "1", "set_labels", labels)
        a.set_auto_archive_interval(60)
        a.set_auto_delete_interval(120)
        a.refresh_data()
        check((a.auto_archive_interval, a.auto_delete_interval) == (60, 120), "interval setters stored", a)
        a.set_auto_delete_interval(-1)

        a.process.exec("echo kept > /home/user/keep.txt")
        a.stop()
        check(a.state == SandboxState.STOPPED, "stopped", a.state)
        stopped = list(d.list(ListSandboxesQuery(labels={"suite": tag}, states=[SandboxState.STOPPED])))
        check([s.id for s in stopped] == [a.id], "state filter", [s.id for s in stopped])
        a.archive()
        a.refresh_data()
        check(a.state == SandboxState.ARCHIVED, "archived", a.state)
        a.start()
        check(a.state == SandboxState.STARTED, "archived sandbox starts", a.state)
        check(a.fs.download_file("keep.txt") == b"kept\n", "disk kept across stop/archive/start")

        # Preview links reach a server inside the sandbox; the token is required.
        a.process.create_session("web")
        from daytona import SessionExecuteRequest
        a.process.execute_session_command("web", SessionExecuteRequest(
            command="mkdir -p /tmp/www && echo preview-ok > /tmp/www/index.html && cd /tmp/www && python3 -m http.server 8000", run_async=True))
        link = a.get_preview_link(8000)
        body = None
        for _ in range(60):
            r = httpx.get(link.url + "/index.html", headers={"X-Daytona-Preview-Token": link.token})
            if r.status_code == 200:
                body = r.text
                break
            time.sleep(0.5)
        check(body == "preview-ok\n", "preview link reaches the port", body)
        check(httpx.get(link.url + "/index.html").status_code == 401, "preview needs the token")
        signed = a.create_signed_preview_url(8000, expires_in_seconds=120)
        check(httpx.get(signed.url + "/index.html").text == "preview-ok\n", "signed preview link")
        a.expire_signed_preview_url(8000, signed.token)
        check(httpx.get(signed.url + "/index.html").status_code == 401, "expired signed link")

        expect_error(lambda: d.create(CreateSandboxFromImageParams(image="alpine:3.20")), DaytonaBadRequestError, "unbuildable image")
        expect_error(lambda: d.create(CreateSandboxFromImageParams(image=Image.base("alpine:3.20").run_commands("true"))), DaytonaBadRequestError, "unbuildable declarative image")
        expect_error(lambda: d.create(CreateSandboxFromSnapshotParams(snapshot="nope")), DaytonaNotFoundError, "unknown snapshot")
        expect_error(lambda: d.create(CreateSandboxFromSnapshotParams(name=f"dup-{tag}")) and d.create(CreateSandboxFromSnapshotParams(name=f"dup-{tag}")), DaytonaError, "duplicate name")
        d.delete(d.get(f"dup-{tag}"))

        snaps = d.snapshot.list()
        check("base" in [x.name for x in snaps.items] and snaps.items[0].state.value == "active", "snapshots are templates", snaps)
        check(d.volume.list() == [], "no volumes")
        expect_error(lambda: d.get("no-such-sandbox"), DaytonaNotFoundError, "unknown sandbox")
        bad = Daytona(DaytonaConfig(api_key="wrong", api_url=config().api_url, target="local"))
        expect_error(lambda: bad.get(a.id), DaytonaAuthenticationError, "wrong key")
        r = httpx.post(f"{a.toolbox_proxy_url}/{a.id}/process/execute", json={"command": "true"}, headers={"Authorization": "Bearer wrong"})
        check(r.status_code == 401 and {"statusCode", "message", "path", "timestamp"} <= r.json().keys(), "toolbox 401 is Daytona-shaped", r.text)

        # Ephemeral: deleted as soon as it stops.
        e = d.create(CreateSandboxFromSnapshotParams(ephemeral=True))
        check(e.auto_delete_interval == 0, "ephemeral", e.auto_delete_interval)
        e.stop()
        wait_state(d, e.id, "destroyed", 30)

        # Deleting a sandbox under a running command: a typed error, no hang.
        errors = []
        t = threading.Thread(target=lambda: errors.append(expect_error(lambda: b.process.exec("sleep 600"), DaytonaError, "exec on deleted sandbox")))
        t.start()
        time.sleep(2)
        d.delete(b)
        t.join(60)
        check(not t.is_alive() and errors, "the running exec ended with an error")
    finally:
        for s in (a, b):
            try:
                d.delete(s)
            except DaytonaNotFoundError:
                pass


def auto_stop(d):
    """autoStopInterval=1: stopped by the engine after a minute without activity (real time)."""
    s = d.create(CreateSandboxFromSnapshotParams(auto_stop_interval=1))
    try:
        s.process.exec("true")
        idle_from = time.monotonic()
        time.sleep(40)
        check(d.get(s.id).state.value == "started", "still started before a minute")
        wait_state(d, s.id, "stopped", 60)
        idle = time.monotonic() - idle_from
        check(55 <= idle <= 95, "stopped after about a minute idle", idle)
    finally:
        d.delete(s)


async def async_flow():
    async with async_client() as d:
        s = await d.create(CreateSandboxFromSnapshotParams(labels={"async": "yes"}))
        try:
            await s.set_autostop_interval(30)
            await s.refresh_data()
            check(s.auto_stop_interval == 30, "async autostop setter", s.auto_stop_interval)
            await s.stop()
            check(s.state == SandboxState.STOPPED, "async stop")
            await s.start()
            check(s.state == SandboxState.STARTED, "async start")
            found = [x.id async for x in d.list(ListSandboxesQuery(labels={"async": "yes"}))]
            check(s.id in found, "async list", found)
        finally:
            await d.delete(s)


def body():
    d = client()
    control_plane(d)
    asyncio.run(async_flow())
    if os.environ.get("DAYTONA_EVAL_SKIP_AUTOSTOP") != "1":
        auto_stop(d)


main("python lifecycle (sync + async)", body)
