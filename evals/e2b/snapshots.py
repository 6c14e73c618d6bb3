"""Pause to disk, snapshots and fork through the Python SDK, proven by a background counter:
pause (memory kept) and connect (the counter goes on from where it stopped, and did not run
while paused; files kept), a filesystem-only pause (connect reboots it: files kept, processes
gone), create_snapshot / list_snapshots / Sandbox.create(<snapshot id or name>) (a new sandbox
with another hostname whose counter keeps counting), fork(count=2), and delete_snapshot."""

import time

from common import check, raises, step, tag, wait_until
from e2b import Sandbox, SandboxException, SandboxState

label = tag()
COUNTER = "/tmp/counter.py"
# Writes an increasing counter to /tmp/count every 0.2 s (atomically, so reads never see half).
COUNTER_SCRIPT = """import os, time
n = 0
while True:
    n += 1
    with open("/tmp/count.tmp", "w") as f:
        f.write(str(n))
    os.replace("/tmp/count.tmp", "/tmp/count")
    time.sleep(0.2)
"""
TICKS_PER_SECOND = 5


def count(sandbox):
    """The counter's current value in `sandbox`."""
    return int(sandbox.files.read("/tmp/count"))


def counting(sandbox, what):
    """Waits until the counter in `sandbox` moves on; returns the value it moved to."""
    start = count(sandbox)
    wait_until(lambda: count(sandbox) > start, f"the counter to keep counting in {what}", timeout=30)
    return count(sandbox)


def counter_runs(sandbox):
    # `[.]` keeps the pattern from matching the shell that runs pgrep.
    pattern = COUNTER.replace(".", "[.]")
    return sandbox.commands.run(f"pgrep -f '{pattern}' || true").stdout.strip() != ""


def hostname(sandbox):
    return sandbox.commands.run("hostname").stdout.strip()


def snapshot_ids(**query):
    paginator = Sandbox.list_snapshots(limit=1, **query)
    ids = []
    while paginator.has_next:
        ids.extend(s.snapshot_id for s in paginator.next_items())
    return ids


with step("create a sandbox running a counter, with a file"):
    a = Sandbox.create(timeout=600, metadata={"flow": label})
    made = [a]
    a.files.write(COUNTER, COUNTER_SCRIPT)
    a.commands.run(f"nohup python3 {COUNTER} > /dev/null 2>&1 &")
    wait_until(lambda: a.files.exists("/tmp/count") and count(a) >= 3, "the counter to start", timeout=30)
    a.files.write("/home/user/kept.txt", "kept")

try:
    with step("pause to disk with memory, connect: the counter goes on from where it stopped"):
        t0 = time.monotonic()
        before = count(a)
        check(a.pause() is True, "pause")
        t1 = time.monotonic()
        info = a.get_info()
        check(info.state == SandboxState.PAUSED, f"state {info.state}")
        check(a.pause() is False, "pausing a paused sandbox is False")
        time.sleep(6)
        t2 = time.monotonic()
        back = Sandbox.connect(a.sandbox_id, timeout=600)
        after = count(back)
        t3 = time.monotonic()
        check(after >= before, f"counter kept its value over the pause: {before} -> {after}")
        # It ran only while the sandbox did (not in the 6 s paused).
        ran = (t1 - t0) + (t3 - t2)
        check(after - before <= TICKS_PER_SECOND * ran + 2, f"counter stood still while paused: {before} -> {after} in {ran:.1f}s of running")
        counting(back, "the resumed sandbox")
        check(back.files.read("/home/user/kept.txt") == "kept", "file kept over the pause")

    with step("create_snapshot, list_snapshots"):
        name = f"snap-{label}"
        snap = a.create_snapshot(name=name)
        check(snap.snapshot_id.startswith("snap") and snap.names == [name], f"{snap}")
        check(a.is_running(), "the source runs on after a snapshot")
        check(snap.snapshot_id in snapshot_ids(sandbox_id=a.sandbox_id), "listed for its sandbox (paged by 1)")
        check(snap.snapshot_id in [s.snapshot_id for s in a.list_snapshots().next_items()], "instance list_snapshots")
        check(snapshot_ids(name=name) == [snap.snapshot_id], "listed by name")
        check(snapshot_ids(sandbox_id="nosuchsandbox0") == [], "nothing for another sandbox")

    with step("Sandbox.create(snapshot id): a new sandbox, still counting, with the file"):
        c = Sandbox.create(snap.snapshot_id, timeout=300, metadata={"flow": label})
        made.append(c)
        check(c.sandbox_id != a.sandbox_id, "a new sandbox")
        check(hostname(c) != hostname(a), f"hostnames {hostname(c)} / {hostname(a)}")
        check(count(c) >= before, "counter restored from the snapshot")
        counting(c, "the restored sandbox")
        check(c.files.read("/home/user/kept.txt") == "kept", "file in the restored sandbox")
        c.kill()

    with step("Sandbox.create(snapshot name)"):
        d = Sandbox.create(name, timeout=300)
        made.append(d)
        counting(d, "the sandbox restored by name")
        d.kill()

    with step("fork(count=2): two running copies, each counting"):
        forks = a.fork(count=2, timeout=300)
        for f in forks:
            if isinstance(f, Sandbox):
                made.append(f)
        check(len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks), f"forks {forks}")
        ids = {a.sandbox_id} | {f.sandbox_id for f in forks}
        check(len(ids) == 3, f"distinct ids {ids}")
        names = {hostname(a)} | {hostname(f) for f in forks}
        check(len(names) == 3, f"distinct hostnames {names}")
        for f in forks:
            counting(f, f"fork {f.sandbox_id}")
            check(f.files.read("/home/user/kept.txt") == "kept", "file in the fork")
        counting(a, "the fork's source")

    with step("filesystem-only pause: connect reboots (file kept, processes gone)"):
        f = forks[0]
        check(counter_runs(f), "the counter runs before the pause")
        check(f.pause(mode="filesystem") is True, "filesystem pause")
        check(f.get_info().state == SandboxState.PAUSED, "paused")
        rebooted = Sandbox.connect(f.sandbox_id, timeout=300)
        check(rebooted.files.read("/home/user/kept.txt") == "kept", "file kept")
        check(not counter_runs(rebooted), "the counter did not survive a reboot")

    with step("auto_resume: traffic wakes a sandbox paused to disk"):
        w = Sandbox.create(timeout=300, lifecycle={"on_timeout": "pause", "auto_resume": True})
        made.append(w)
        check(w.get_info().lifecycle["auto_resume"] is True, "autoResume reported")
        w.files.write("/home/user/kept.txt", "kept")
        check(w.pause() is True, "paused")
        check(Sandbox.get_info(w.sandbox_id).state == SandboxState.PAUSED, "listed as paused")
        check(w.commands.run("cat /home/user/kept.txt").stdout == "kept", "a command woke it")
        check(w.get_info().state == SandboxState.RUNNING, "running again")

    with step("delete_snapshot"):
        check(Sandbox.delete_snapshot(snap.snapshot_id) is True, "deleted")
        check(Sandbox.delete_snapshot(snap.snapshot_id) is False, "second delete is False")
        check(snap.snapshot_id not in snapshot_ids(), "no longer listed")
        raises(SandboxException, lambda: Sandbox.create(snap.snapshot_id), "create from a deleted snapshot")
        raises(SandboxException, lambda: a.create_snapshot(mode="filesystem"), "filesystem-only snapshots are refused")
finally:
    for s in made:
        Sandbox.kill(s.sandbox_id)
