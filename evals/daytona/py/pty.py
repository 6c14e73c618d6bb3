"""PTY over WebSocket with exit control, sync and async: create, type, read output, resize,
list/info, re-attach, exit code on exit, kill."""

import asyncio
import time

from common import async_sandbox, check, main_sync_async, sandbox
from daytona import PtySize


def read_until(handle, needle: bytes, seconds: float = 20) -> bytes:
    buf = b""
    deadline = time.monotonic() + seconds
    while needle not in buf and time.monotonic() < deadline:
        handle.wait(on_data=lambda b: buf_append(b), timeout=0.5)
        buf = bytes(collected)
    return buf


collected = bytearray()


def buf_append(b: bytes):
    collected.extend(b)


def sync_flow():
    with sandbox() as s:
        p = s.process
        h = p.create_pty_session("term", cwd="/tmp", envs={"PTY_VAR": "set"}, pty_size=PtySize(cols=100, rows=30))
        check(h.is_connected(), "connected")
        h.send_input("echo $PTY_VAR $(pwd) $(stty size)\n")
        out = read_until(h, b"set /tmp 30 100")
        check(b"set /tmp 30 100" in out, "env, cwd and size reach the shell", out[-300:])
        info = h.resize(PtySize(cols=120, rows=40))
        check((info.cols, info.rows) == (120, 40), "resize", info)
        collected.clear()
        h.send_input("stty size\n")
        check(b"40 120" in read_until(h, b"40 120"), "resized terminal")
        sessions = p.list_pty_sessions()
        check([x.id for x in sessions] == ["term"] and sessions[0].active, "list", sessions)
        check(p.get_pty_session_info("term").cwd == "/tmp", "info")
        h.disconnect()

        # Re-attach to the running shell, then let it exit with a code.
        h2 = p.connect_pty_session("term")
        collected.clear()
        h2.send_input("echo again\n")
        check(b"again" in read_until(h2, b"again"), "re-attached")
        h2.send_input("exit 3\n")
        r = h2.wait(timeout=20)
        check(r.exit_code == 3, "exit code through exit control", r)
        check(not p.get_pty_session_info("term").active, "inactive after exit")

        h3 = p.create_pty_session("killme")
        h3.kill()
        r = h3.wait(timeout=20)
        check(r.exit_code is not None and r.exit_code != 0, "killed shell reports an exit", r)
        check("killme" not in [x.id for x in p.list_pty_sessions()], "killed session is gone")


async def async_flow():
    async with async_sandbox() as s:
        got = bytearray()
        h = await s.process.create_pty_session("a", on_data=lambda b: got.extend(b), pty_size=PtySize(cols=80, rows=24))
        await h.wait_for_connection()
        await h.send_input("echo async-$((2+3))\nexit 0\n")
        r = await asyncio.wait_for(h.wait(), 20)
        check(r.exit_code == 0 and b"async-5" in got, "async pty", (r, bytes(got)[-200:]))


main_sync_async("python pty (sync + async)", sync_flow, async_flow)
