"""Snapshots of sandboxes, fork and pause through the Python SDK, proven by a background
counter: sandbox.create_snapshot(name) (the source runs on), the snapshot under
daytona.snapshot (get, list), create(snapshot=name) (a new sandbox, another hostname, the counter
still counting, the file there), sandbox.fork() (a started copy, counting), pause (to disk,
reported stopped) and start (the counter goes on from where it stopped), and deleting the
snapshot."""

import time
import uuid

from common import check, client, delete_all, expect_error, main
from daytona import CreateSandboxFromSnapshotParams, DaytonaError, DaytonaNotFoundError, SandboxState

COUNTER = "/tmp/counter.py"
# Writes an increasing counter to /tmp/count every 0.2 s (atomically, so reads never see half).
COUNTER_SCRIPT = b"""import os, time
n = 0
while True:
    n += 1
    with open("/tmp/count.tmp", "w") as f:
        f.write(str(n))
    os.replace("/tmp/count.tmp", "/tmp/count")
    time.sleep(0.2)
"""
KEPT = "/home/user/kept.txt"


def count(s):
    return int(s.fs.download_file("/tmp/count"))


def counting(s, what, seconds=30):
    """Waits until the counter in `s` moves on; returns where it got to."""
    start = count(s)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = count(s)
        if now > start:
            return now
        time.sleep(0.5)
    raise AssertionError(f"the counter stood still at {start} in {what}")


def hostname(s):
    return s.process.exec("hostname").result.strip()


def start_counter(s):
    s.fs.upload_file(COUNTER_SCRIPT, COUNTER)
    s.process.exec(f"nohup python3 {COUNTER} > /dev/null 2>&1 &")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if s.process.exec("cat /tmp/count 2>/dev/null || echo 0").result.strip() not in ("", "0"):
            return
        time.sleep(0.5)
    raise AssertionError("the counter did not start")


def body():
    d = client()
    name = f"snap-{uuid.uuid4().hex[:8]}"
    a = d.create(CreateSandboxFromSnapshotParams(labels={"flow": "snapshots"}, auto_stop_interval=0))
    made = [a]
    try:
        start_counter(a)
        a.fs.upload_file(b"kept", KEPT)

        before = count(a)
        a.create_snapshot(name)
        check(a.state == SandboxState.STARTED, "the source runs on after a snapshot", a.state)
        counting(a, "the source after its snapshot")

        snap = d.snapshot.get(name)
        check(snap.name == name and snap.state.value == "active" and not snap.general, "snapshot.get", snap)
        check(snap.id.startswith("snap") and snap.cpu == a.cpu, "snapshot id and size", snap)
        check(name in [x.name for x in d.snapshot.list().items], "listed with the templates")
        mine = d.snapshot.list(source_sandbox_id=a.id).items
        check([x.name for x in mine] == [name], "listed for its sandbox", [x.name for x in mine])
        expect_error(lambda: a.create_snapshot("base"), DaytonaError, "a template's name")

        c = d.create(CreateSandboxFromSnapshotParams(snapshot=name, labels={"flow": "snapshots"}))
        made.append(c)
        check(c.id != a.id and c.state == SandboxState.STARTED, "restored into a new started sandbox", c.state)
        check(hostname(c) != hostname(a), "another hostname", (hostname(c), hostname(a)))
        check(count(c) >= before, "counter restored from the snapshot", (count(c), before))
        counting(c, "the restored sandbox")
        check(c.fs.download_file(KEPT) == b"kept", "file in the restored sandbox")
        d.delete(c)

        f = a.fork(name=f"fork-{a.id}")
        made.append(f)
        check(f.id != a.id and f.state == SandboxState.STARTED, "fork started", f.state)
        check(f.name == f"fork-{a.id}", "fork named", f.name)
        check(f.labels.get("flow") == "snapshots", "fork keeps the labels", f.labels)
        counting(f, "the fork")
        check(f.fs.download_file(KEPT) == b"kept", "file in the fork")
        d.delete(f)

        before = count(a)
        a.pause()
        check(a.state == SandboxState.STOPPED, "paused to disk reads stopped", a.state)
        time.sleep(3)
        a.start()
        check(a.state == SandboxState.STARTED, "started again", a.state)
        after = count(a)
        check(after >= before, "counter kept its value over pause and start", (before, after))
        counting(a, "the sandbox started after pause")

        d.snapshot.delete(name)
        expect_error(lambda: d.snapshot.get(name), DaytonaNotFoundError, "deleted snapshot")
        expect_error(lambda: d.create(CreateSandboxFromSnapshotParams(snapshot=name)), DaytonaNotFoundError, "create from a deleted snapshot")
    finally:
        delete_all(d, made)


main("python snapshots", body)
