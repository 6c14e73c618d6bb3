"""Control plane through the Python SDK: create (metadata, envs, timeout, lifecycle), get_info,
list (metadata and state filters, paging), update_network (egress rules at runtime), connect, set_timeout, metrics, pause and resume via
connect, kill, expiry, and the errors for a bad key, an unknown template and a bad timeout."""

import json
import os
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from common import check, raises, step, tag, wait_until
from e2b import (
    AuthenticationException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

label = tag()


def listed(query, limit=None):
    paginator = Sandbox.list(query=query, limit=limit)
    pages, items = 0, []
    while paginator.has_next:
        items.extend(paginator.next_items())
        pages += 1
    return pages, items


with step("create two sandboxes"):
    a = Sandbox.create(timeout=300, metadata={"flow": label, "n": "1"}, envs={"GREETING": "hello"})
    b = Sandbox.create(timeout=300, metadata={"flow": label, "n": "2"}, lifecycle={"on_timeout": "pause"})
    check(a.sandbox_id.isalnum() and a.sandbox_id.islower(), f"id {a.sandbox_id!r} is [a-z0-9]+")

try:
    with step("get_info"):
        info = a.get_info()
        check(info.sandbox_id == a.sandbox_id, "info id")
        check(info.state == SandboxState.RUNNING, f"state {info.state}")
        check(info.metadata == {"flow": label, "n": "1"}, f"metadata {info.metadata}")
        check(info.template_id == "base", f"template {info.template_id}")
        check(info.cpu_count >= 1 and info.memory_mb >= 128, "resources")
        check(info.end_at > info.started_at, "end after start")
        check(info.envd_version == "0.6.4", f"envd version {info.envd_version}")
        check(b.get_info().lifecycle["on_timeout"].value == "pause", "autoPause reported")

    with step("sandbox env vars reach commands"):
        check(a.commands.run("echo $GREETING").stdout == "hello\n", "GREETING")

    with step("list: metadata filter and paging"):
        pages, items = listed(SandboxQuery(metadata={"flow": label}), limit=1)
        ids = sorted(s.sandbox_id for s in items)
        check(ids == sorted([a.sandbox_id, b.sandbox_id]), f"listed {ids}")
        check(pages >= 2, f"{pages} pages with limit=1")
        _, one = listed(SandboxQuery(metadata={"flow": label, "n": "2"}))
        check([s.sandbox_id for s in one] == [b.sandbox_id], "metadata pair filter")

    with step("network: egress rules replaced at runtime (update_network)"):
        policy_url = f"{os.environ['E2B_API_URL'].rstrip('/')}/v1/sandboxes/{a.sandbox_id}/egress-policy"

        def policy():
            req = urllib.request.Request(policy_url, headers={"X-API-Key": os.environ["E2B_API_KEY"]})
            with urllib.request.urlopen(req) as r:
                return json.load(r)

        a.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": ["203.0.113.9", "198.51.100.0/24"]})
        got = policy()
        check(got == {"default": "deny", "allow": ["203.0.113.9", "198.51.100.0/24"], "deny": []}, f"{got}")
        a.update_network({"deny_out": ["192.0.2.0/24"]})
        got = policy()
        check(got == {"default": "allow", "allow": [], "deny": ["192.0.2.0/24"]}, f"{got}")
        a.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": ["api.example.com", "*.example.org"]})
        got = policy()
        check(got == {"default": "deny", "allow": ["api.example.com", "*.example.org"], "deny": []}, f"domain rules: {got}")
        raises(SandboxException, lambda: a.update_network({"allow_out": ["localhost"]}), "a bad entry")
        check(policy()["allow"] == ["api.example.com", "*.example.org"], "a refused update changes nothing")
        a.update_network({"deny_out": ["192.0.2.0/24"]})

    with step("connect to a running sandbox"):
        again = Sandbox.connect(a.sandbox_id)
        check(again.commands.run("echo $GREETING").stdout == "hello\n", "connected instance works")
        check(again.files.exists("/home/user"), "connected instance has files")

    with step("set_timeout moves endAt"):
        before = a.get_info().end_at
        a.set_timeout(600)
        check(a.get_info().end_at > before, "endAt moved")

    with step("metrics"):
        metrics = a.get_metrics()
        check(len(metrics) >= 1, "one sample")
        m = metrics[-1]
        check(m.cpu_count >= 1 and m.mem_total > m.mem_used > 0 and m.disk_total > 0, f"{m}")
        # A history (a sample every 5 s), answered for the range asked.
        # Two samples can be close together: wait for a history that spans more than the
        # second that `end` is rounded to below.
        def spans():
            h = a.get_metrics()
            return len(h) >= 2 and (h[-1].timestamp - h[0].timestamp).total_seconds() > 2

        wait_until(spans, "metrics samples more than 2 s apart", timeout=30)
        history = a.get_metrics()
        stamps = [x.timestamp for x in history]
        check(stamps == sorted(stamps), f"samples come oldest first: {stamps}")
        end = history[0].timestamp.replace(microsecond=0) + timedelta(seconds=1)
        upto = a.get_metrics(end=end)
        check(1 <= len(upto) < len(history) and all(x.timestamp <= end for x in upto), f"end bounds the range: {upto} of {history}")
        check(a.get_metrics(start=datetime.now(timezone.utc) + timedelta(hours=1)) == [], "nothing after now")

    with step("pause, list as paused, resume by connect"):
        b.files.write("/home/user/state.txt", "kept")
        check(b.pause() is True, "pause")
        check(not b.is_running(), "a paused sandbox does not run")
        _, paused = listed(SandboxQuery(metadata={"flow": label}, state=[SandboxState.PAUSED]))
        check([s.sandbox_id for s in paused] == [b.sandbox_id], "listed as paused")
        check(b.pause() is False, "pausing a paused sandbox is False")
        resumed = Sandbox.connect(b.sandbox_id, timeout=300)
        check(resumed.is_running(), "resumed")
        check(resumed.files.read("/home/user/state.txt") == "kept", "state kept over pause")

    with step("kill"):
        check(a.kill() is True, "kill")
        check(not a.is_running(), "killed sandbox does not run")
        check(Sandbox.kill(a.sandbox_id) is False, "second kill is False")
        raises(SandboxNotFoundException, lambda: Sandbox.get_info(a.sandbox_id), "get_info after kill")
        raises(SandboxNotFoundException, lambda: Sandbox.connect(a.sandbox_id), "connect after kill")

    with step("timeout expiry pauses an autoPause sandbox, connect brings it back"):
        b.set_timeout(3)
        wait_until(lambda: b.get_info().state == SandboxState.PAUSED, "auto pause", timeout=30)
        back = Sandbox.connect(b.sandbox_id, timeout=300)
        check(back.commands.run("cat /home/user/state.txt").stdout == "kept", "state kept")

    with step("timeout expiry kills"):
        c = Sandbox.create(timeout=300, metadata={"flow": label, "n": "3"})
        c.set_timeout(3)
        started = time.monotonic()
        wait_until(lambda: not c.is_running(), "expiry", timeout=40)
        raises(SandboxNotFoundException, lambda: c.get_info(), "expired sandbox is gone")
        print(f"    expired after {time.monotonic() - started:.1f}s")

    with step("errors: bad key, unknown template, bad timeout"):
        raises(AuthenticationException, lambda: Sandbox.create(api_key="e2b_wrong"), "bad key")
        e = raises(SandboxException, lambda: Sandbox.create(template="no-such-template"), "template")
        check("not found" in str(e), f"template error {e}")
        raises(SandboxException, lambda: Sandbox.create(timeout=-1), "negative timeout")
        raises(SandboxNotFoundException, lambda: Sandbox.connect("doesnotexist0"), "unknown id")
finally:
    for s in (a, b):
        Sandbox.kill(s.sandbox_id)
