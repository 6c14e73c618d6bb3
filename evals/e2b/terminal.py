"""PTYs through the Python SDK: sandbox.pty.create, send_stdin, resize, connect, kill."""

from common import check, raises, step
from e2b import CommandExitException, Sandbox
from e2b.sandbox.commands.command_handle import PtySize

sbx = Sandbox.create(timeout=300)
try:
    with step("interactive shell on a PTY"):
        out = []
        h = sbx.pty.create(PtySize(rows=24, cols=80), envs={"WHO": "pty"})
        sbx.pty.send_stdin(h.pid, b"echo hello-$WHO-$((20+22)); tty; stty size\n")
        for _, _, chunk in h:
            out.append(chunk or b"")
            if b"24 80" in b"".join(out):
                break
        sbx.pty.resize(h.pid, PtySize(rows=40, cols=120))
        sbx.pty.send_stdin(h.pid, b"stty size; exit 0\n")
        r = h.wait(on_pty=out.append)
        text = b"".join(out).decode("utf-8", "replace")
        check(r.exit_code == 0, f"exit {r.exit_code}")
        check("hello-pty-42" in text, f"output {text!r}")
        check("/dev/pts/" in text, "a real terminal")
        check("24 80" in text and "40 120" in text, f"sizes in {text!r}")

    with step("reconnect to a PTY and kill it"):
        h = sbx.pty.create(PtySize(rows=24, cols=80))
        again = sbx.pty.connect(h.pid)
        sbx.pty.send_stdin(h.pid, b"echo marker-$((6*7))\n")
        seen = []
        for _, _, chunk in again:
            if chunk:
                seen.append(chunk)
            if b"marker-42" in b"".join(seen):
                break
        check(b"marker-42" in b"".join(seen), "output reached the second connection")
        check(sbx.pty.kill(h.pid) is True, "kill")
        e = raises(CommandExitException, h.wait, "killed PTY")
        check(e.exit_code == -1, f"exit {e.exit_code}")
finally:
    Sandbox.kill(sbx.sandbox_id)
