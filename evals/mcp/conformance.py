#!/usr/bin/env python3
"""MCP conformance of Platinum with the official Python SDK (`mcp`), against real VMs.

Connects over Streamable HTTP and over stdio (`platinum mcp`), in the legacy handshake and in
the 2026-07-28 (`server/discover`) era, and on the full runs:
  - calls every tool the server lists and checks each structured result against the tool's
    declared outputSchema (jsonschema, draft 2020-12);
  - sees progress notifications arrive while a long command runs, cancels a `sleep 600` and
    checks the guest process is gone;
  - receives real image content blocks (a PNG file read back, a rich result of run_code);
  - checks tool errors are results with a code (sandbox_not_found, invalid_arguments,
    file_not_found) and that resources, templates and file URIs work.

Usage: conformance.py --http URL --key KEY [--stdio PLATINUM_BIN [--stdio-arg ARG]...] [--quick]
  --stdio runs `PLATINUM_BIN mcp [ARG...]` with PLATINUM_URL / PLATINUM_API_KEY from the
  environment.
  --quick: only connect, list tools and run one command in a new sandbox (for extra modes).
  --code-template T: the full HTTP run uses a sandbox of template T and requires a matplotlib
  figure to come back as an image block (T must have matplotlib, e.g. code-interpreter-v1).
Exit status 0 when every check passed; failures are printed with what was received.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
import traceback
import zlib

import anyio
import httpx2
import jsonschema
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def png(width: int = 4, height: int = 3) -> bytes:
    """A small valid RGB PNG, built without any imaging library."""
    raw = b"".join(b"\x00" + bytes([255, 0, 0]) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class Failure(Exception):
    pass


def check(cond: bool, what: str, got: object = None) -> None:
    if not cond:
        raise Failure(f"{what}; got: {got!r}"[:4000])


class Suite:
    def __init__(self, client: Client, label: str, http_base: str, key: str, template: str | None = None):
        self.c = client
        self.template = template
        self.label = label
        self.http_base = http_base
        self.key = key
        self.schemas: dict[str, dict] = {}
        self.called: set[str] = set()

    def log(self, msg: str) -> None:
        print(f"[{self.label}] {msg}", flush=True)

    async def tools(self) -> list[str]:
        listed = (await self.c.list_tools()).tools
        for t in listed:
            check(bool(t.description), f"{t.name} has a description", t)
            check(t.input_schema.get("type") == "object", f"{t.name} input schema is an object", t.input_schema)
            check(t.output_schema is not None, f"{t.name} declares an outputSchema", t)
            jsonschema.Draft202012Validator.check_schema(t.output_schema)
            self.schemas[t.name] = t.output_schema
        return [t.name for t in listed]

    async def call(self, name: str, args: dict, *, ok: bool = True, progress=None):
        self.called.add(name)
        r = await self.c.call_tool(name, args, progress_callback=progress)
        if ok:
            check(not r.is_error, f"{name}({json.dumps(args)[:200]}) succeeds", r.content)
            check(r.structured_content is not None, f"{name} returns structuredContent", r)
            jsonschema.validate(r.structured_content, self.schemas[name], cls=jsonschema.Draft202012Validator)
        else:
            check(r.is_error, f"{name}({json.dumps(args)[:200]}) fails as a tool result", r)
            err = (r.meta or {}).get("platinum/error")
            check(isinstance(err, dict) and "code" in err, f"{name} error carries a code in _meta", r.meta)
            text = r.content[0].text if r.content else ""
            check(text.startswith(err["code"] + ": "), "error text starts with its code", text)
        return r

    @staticmethod
    def code(r) -> str:
        """The code of a failed result."""
        return r.meta["platinum/error"]["code"]

    async def run(self, cmd: str, sid: str, **kw) -> dict:
        return (await self.call("run_command", {"sandbox_id": sid, "command": cmd, **kw})).structured_content

    async def quick(self) -> None:
        names = await self.tools()
        self.log(f"{len(names)} tools; protocol {self.c.protocol_version}")
        s = (await self.call("create_sandbox", {"timeout_secs": 300})).structured_content
        try:
            r = await self.run("echo quick", s["id"])
            check(r["stdout"] == "quick\n" and r["exit_code"] == 0, "quick command output", r)
        finally:
            await self.call("kill_sandbox", {"sandbox_id": s["id"]})
        self.log("quick run ok")

    async def full(self) -> None:
        names = await self.tools()
        self.log(f"{len(names)} tools; protocol {self.c.protocol_version}; server {self.c.server_info}")
        check(self.c.server_info is not None and self.c.server_info.name == "platinum", "serverInfo", self.c.server_info)
        check("create_sandbox" in (self.c.instructions or ""), "instructions explain the workflow", self.c.instructions)

        # Errors the model can act on.
        r = await self.call("get_sandbox", {"sandbox_id": "nosuchsandbox0000000"}, ok=False)
        check(self.code(r) == "sandbox_not_found", "unknown sandbox code", r.meta)
        r = await self.call("create_sandbox", {"vcpus": "two"}, ok=False)
        check(self.code(r) == "invalid_arguments", "bad arguments code", r.meta)

        templates = (await self.call("list_templates", {})).structured_content
        check("base" in templates["templates"], "list_templates names the built-in templates", templates)
        if self.template:
            check(self.template in templates["templates"], "list_templates names the template used", templates)

        t0 = time.monotonic()
        create = {"timeout_secs": 900, "metadata": {"suite": self.label}, "env": {"GREETING": "hi"}}
        if self.template:
            create["template"] = self.template
        s = (await self.call("create_sandbox", create)).structured_content
        sid = s["id"]
        self.log(f"sandbox {sid} running after {time.monotonic() - t0:.1f}s")
        try:
            await self.sandbox_checks(sid)
        finally:
            k = (await self.call("kill_sandbox", {"sandbox_id": sid})).structured_content
            check(k["state"] == "deleted", "kill_sandbox result", k)
        r = await self.call("get_sandbox", {"sandbox_id": sid}, ok=False)
        check(self.code(r) == "sandbox_not_found", "gone after kill", r.meta)
        missing = set(names) - self.called
        check(not missing, "every listed tool was called", sorted(missing))
        self.log(f"all {len(names)} tools called; all checks passed")

    async def sandbox_checks(self, sid: str) -> None:
        check((await self.call("get_sandbox", {"sandbox_id": sid})).structured_content["state"] == "running", "running")
        listed = (await self.call("list_sandboxes", {"metadata": {"suite": self.label}})).structured_content
        check([x["id"] for x in listed["sandboxes"]] == [sid], "list_sandboxes filters by metadata", listed)

        # Commands: output, exit code, env, cwd, stdin, timeout.
        r = await self.run("echo $GREETING; pwd; echo oops >&2; exit 3", sid)
        check((r["stdout"], r["stderr"], r["exit_code"]) == ("hi\n/home/user\n", "oops\n", 3), "command result", r)
        r = await self.run("cat; pwd", sid, stdin="fed\n", cwd="/tmp", env={"X": "1"})
        check(r["stdout"] == "fed\n/tmp\n", "stdin and cwd", r)
        r = await self.run("sleep 30", sid, timeout_ms=1000)
        check(r["timed_out"] is True, "timeout kills the command", r)

        # Progress notifications while a long command runs.
        events: list[tuple[float, float, str]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            events.append((time.monotonic(), progress, message or ""))

        r = await self.call("run_command", {"sandbox_id": sid, "command": "for i in 1 2 3; do echo tick $i; sleep 1; done"},
                            progress=on_progress)
        done = time.monotonic()
        ticks = [e for e in events if e[2].startswith("tick")]
        check(len(ticks) >= 3, "a progress notification per line", events)
        check(ticks[0][0] < done - 1.0, "progress arrives while the command runs", (events, done))
        check(all(a[1] < b[1] for a, b in zip(events, events[1:])), "progress increases", events)
        check(r.structured_content["stdout"] == "tick 1\ntick 2\ntick 3\n", "streamed command's output", r.structured_content)
        self.log(f"{len(events)} progress notifications, first tick {done - ticks[0][0]:.1f}s before the result")

        # Cancellation kills the guest process.
        pid_box: dict[str, int] = {}
        started = anyio.Event()

        async def on_start(progress: float, total: float | None, message: str | None) -> None:
            if message and message.startswith("started pid "):
                pid_box["pid"] = int(message.split()[-1])
                started.set()

        self.called.add("run_command")
        async with anyio.create_task_group() as tg:
            async def long_call() -> None:
                await self.c.call_tool("run_command", {"sandbox_id": sid, "command": "sleep 600", "timeout_ms": 0},
                                       progress_callback=on_start)
                raise Failure("sleep 600 returned instead of being cancelled")

            scope = anyio.CancelScope()

            async def runner() -> None:
                with scope:
                    await long_call()

            tg.start_soon(runner)
            with anyio.fail_after(60):
                await started.wait()
            r = await self.run(f"kill -0 {pid_box['pid']} && echo alive", sid)
            check(r["stdout"] == "alive\n", "the long command runs before the cancel", r)
            scope.cancel()
        pid = pid_box["pid"]
        for _ in range(50):
            r = await self.run(f"kill -0 {pid} 2>/dev/null && echo alive || echo gone", sid)
            if r["stdout"] == "gone\n":
                break
            await anyio.sleep(0.2)
        check(r["stdout"] == "gone\n", f"cancelled command (pid {pid}) is killed in the guest", r)
        r = await self.run("pgrep -x sleep || echo none", sid)
        check(r["stdout"] == "none\n", "no sleep left in the guest", r)
        self.log(f"cancel killed pid {pid}")

        # Background commands.
        r = await self.run("sleep 300", sid, background=True)
        check(r["pid"] > 0 and r["exit_code"] is None, "background start returns the pid", r)
        await self.run(f"kill {r['pid']}", sid)

        # Files: text, image, binary, list, stat, move, remove, errors.
        info = (await self.call("write_file", {"sandbox_id": sid, "path": "notes/a.txt", "content": "héllo\n"})).structured_content
        check(info["path"] == "/home/user/notes/a.txt" and info["size"] == 7, "write_file result", info)
        r = await self.call("read_file", {"sandbox_id": sid, "path": "/home/user/notes/a.txt"})
        check(r.content[0].type == "text" and r.content[0].text == "héllo\n", "text file content", r.content)
        check(r.structured_content["kind"] == "text" and r.structured_content["text"] == "héllo\n", "read_file structured", r.structured_content)
        r = await self.call("read_file", {"sandbox_id": sid, "path": "notes/a.txt", "max_bytes": 2})
        check(r.structured_content["truncated"] is True and r.content[0].text == "h", "max_bytes cuts text", r.structured_content)
        image = png()
        await self.call("write_file", {"sandbox_id": sid, "path": "img/red.png", "content": base64.b64encode(image).decode(), "encoding": "base64"})
        r = await self.call("read_file", {"sandbox_id": sid, "path": "img/red.png"})
        check(r.content[0].type == "image" and r.content[0].mime_type == "image/png", "PNG comes back as an image block", r.content[0])
        check(base64.b64decode(r.content[0].data) == image, "image bytes round-trip")
        blob = bytes(range(256)) * 4
        await self.call("write_file", {"sandbox_id": sid, "path": "bin/data", "content": base64.b64encode(blob).decode(), "encoding": "base64"})
        r = await self.call("read_file", {"sandbox_id": sid, "path": "bin/data"})
        check(r.content[0].type == "resource", "binary comes back as an embedded resource", r.content[0])
        res = r.content[0].resource
        check(base64.b64decode(res.blob) == blob and str(res.uri).startswith(f"platinum://sandboxes/{sid}/files/"), "embedded blob", res.uri)
        listing = (await self.call("list_files", {"sandbox_id": sid, "path": "/home/user", "depth": 2})).structured_content
        paths = {e["path"] for e in listing["entries"]}
        check({"/home/user/notes/a.txt", "/home/user/img/red.png"} <= paths, "list_files", paths)
        st = (await self.call("stat_file", {"sandbox_id": sid, "path": "img/red.png"})).structured_content
        check(st["type"] == "file" and st["size"] == len(image), "stat_file", st)
        mv = (await self.call("move_file", {"sandbox_id": sid, "from": "notes/a.txt", "to": "notes/b.txt"})).structured_content
        check(mv["path"] == "/home/user/notes/b.txt", "move_file", mv)
        await self.call("remove_file", {"sandbox_id": sid, "path": "notes", "recursive": True})
        r = await self.call("read_file", {"sandbox_id": sid, "path": "notes/b.txt"}, ok=False)
        check(self.code(r) == "file_not_found", "missing file code", r.meta)

        # Code: state between calls, rich results, images, errors.
        r = (await self.call("run_code", {"sandbox_id": sid, "code": "x = 41\nprint('set')"})).structured_content
        check(r["stdout"] == "set\n" and r["error"] is None, "run_code stdout", r)
        r2 = await self.call("run_code", {"sandbox_id": sid, "code": "x + 1"})
        out = r2.structured_content
        check([x["text"] for x in out["results"] if x["is_main"]] == ["42"], "state persists between run_code calls", out)
        check(out["context_id"] == r["context_id"], "same default context", out)
        pixel = base64.b64encode(png()).decode()
        code = ("import base64\nclass Pic:\n    def _repr_png_(self):\n"
                f"        return base64.b64decode('{pixel}')\nPic()")
        r = await self.call("run_code", {"sandbox_id": sid, "code": code})
        images = [b for b in r.content if b.type == "image"]
        check(len(images) == 1 and images[0].mime_type == "image/png", "rich PNG result is an image block", r.content)
        check(base64.b64decode(images[0].data) == png(), "rich result image bytes")
        check("image/png" in r.structured_content["results"][0]["formats"], "formats list the image", r.structured_content)
        check(pixel not in json.dumps(r.structured_content), "structured result does not repeat the image bytes")
        r = (await self.call("run_code", {"sandbox_id": sid, "code": "1/0"})).structured_content
        check(r["error"] and r["error"]["name"] == "ZeroDivisionError", "code errors are reported", r)
        r = (await self.call("run_code", {"sandbox_id": sid, "code": "console.log(6*7)", "language": "javascript"})).structured_content
        check(r["stdout"] == "42\n", "javascript", r)
        if self.template or await self.has_matplotlib(sid):
            r = await self.call("run_code", {"sandbox_id": sid, "code": "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"})
            check(any(b.type == "image" and b.mime_type == "image/png" for b in r.content),
                  "matplotlib figure is an image block", r.content)
            self.log("matplotlib figure came back as an image block")

        # Preview URL of a service in the sandbox.
        await self.run("mkdir -p site && echo preview-ok > site/index.html && cd site && "
                       "nohup python3 -m http.server 8000 >/dev/null 2>&1 &", sid)
        for _ in range(100):
            r = await self.c.call_tool("preview_url", {"sandbox_id": sid, "port": 8000})
            if not r.is_error:
                break
            check(self.code(r) == "port_not_open", "preview before the service listens", r.meta)
            await anyio.sleep(0.2)
        url = (await self.call("preview_url", {"sandbox_id": sid, "port": 8000})).structured_content["url"]
        async with httpx2.AsyncClient() as http:
            page = await http.get(url + "index.html", headers={"Authorization": f"Bearer {self.key}"})
        check(page.status_code == 200 and page.text == "preview-ok\n", f"preview URL {url} serves the page", page.text)

        # Resources.
        resources = (await self.c.list_resources()).resources
        uris = {str(x.uri) for x in resources}
        check({"platinum://sandboxes", f"platinum://sandboxes/{sid}"} <= uris, "resources/list", uris)
        templates = {t.uri_template for t in (await self.c.list_resource_templates()).resource_templates}
        check(templates == {"platinum://sandboxes/{id}", "platinum://sandboxes/{id}/files/{+path}",
                            "platinum://sandboxes/{id}/console"}, "resource templates", templates)
        info = (await self.c.read_resource(f"platinum://sandboxes/{sid}")).contents[0]
        check(info.mime_type == "application/json" and json.loads(info.text)["id"] == sid, "sandbox resource", info)
        f = (await self.c.read_resource(f"platinum://sandboxes/{sid}/files/home/user/site/index.html")).contents[0]
        check(f.text == "preview-ok\n", "file resource", f)
        f = (await self.c.read_resource(f"platinum://sandboxes/{sid}/files/home/user/img/red.png")).contents[0]
        check(f.mime_type == "image/png" and base64.b64decode(f.blob) == image, "binary file resource", f.mime_type)
        console = (await self.c.read_resource(f"platinum://sandboxes/{sid}/console")).contents[0]
        check(isinstance(console.text, str), "console resource", console)
        try:
            await self.c.read_resource("platinum://sandboxes/nosuchsandbox0000000")
            raise Failure("reading an unknown sandbox resource should fail")
        except Failure:
            raise
        except Exception as e:  # noqa: BLE001 - the SDK raises its McpError subclass
            check("not found" in str(e), "unknown resource error", e)

        # Pause and resume.
        p = (await self.call("pause_sandbox", {"sandbox_id": sid})).structured_content
        check(p["state"] == "paused", "pause", p)
        p = (await self.call("resume_sandbox", {"sandbox_id": sid})).structured_content
        check(p["state"] == "running", "resume", p)
        r = await self.run("echo after-resume", sid)
        check(r["stdout"] == "after-resume\n", "commands after resume", r)

        # A checkpoint before a risky step, and the rollback that undoes it.
        cp = (await self.call("checkpoint", {"sandbox_id": sid})).structured_content
        check(cp["id"].startswith("ckpt") and cp["sandbox_id"] == sid, "checkpoint", cp)
        await self.run("rm -rf /home/user/site && echo risky > /home/user/risky.txt", sid)
        rb = (await self.call("rollback", {"sandbox_id": sid, "checkpoint": cp["id"]})).structured_content
        check(rb == {"id": sid, "state": "running"}, "rollback", rb)
        r = await self.run("cat /home/user/site/index.html; test -e /home/user/risky.txt && echo still-there", sid)
        check(r["stdout"] == "preview-ok\n", "rollback undid the step", r)
        r = await self.call("rollback", {"sandbox_id": sid, "checkpoint": "ckptnosuchcheckpoint0000"}, ok=False)
        check(self.code(r) == "snapshot_not_found", "unknown checkpoint code", r.meta)

        # A named snapshot restored into a new sandbox, and a fork: both run what the source ran.
        name = f"mcp-{self.label}-{sid}"
        snap = (await self.call("snapshot_sandbox", {"sandbox_id": sid, "name": name})).structured_content
        check(snap["name"] == name and snap["sandbox_id"] == sid, "snapshot", snap)
        listed = (await self.call("list_snapshots", {"sandbox_id": sid})).structured_content
        check([x["id"] for x in listed["snapshots"]] == [snap["id"]], "list_snapshots", listed)
        restored = (await self.call("restore_snapshot", {"snapshot": name, "timeout_secs": 120})).structured_content
        forked = (await self.call("fork_sandbox", {"sandbox_id": sid})).structured_content
        copies = [restored["id"]] + [c["id"] for c in forked["sandboxes"]]
        try:
            check(restored["state"] == "running" and len(forked["sandboxes"]) == 1, "restore and fork", (restored, forked))
            for copy in copies:
                r = await self.run("cat /home/user/site/index.html; hostname", copy)
                check(r["stdout"] == f"preview-ok\n{copy}\n", "a copy has the source's files and its own name", r)
        finally:
            for copy in copies:
                await self.call("kill_sandbox", {"sandbox_id": copy})

        # A persistent volume: created on first attach, mounted at once, written, detached.
        vol = f"mcp-{self.label}-{sid}"
        v = (await self.call("attach_volume", {"volume": vol, "sandbox_id": sid, "path": "/data", "size_mib": 64})).structured_content
        check(v["name"] == vol and v["attachments"] == [{"sandbox_id": sid, "path": "/data", "readonly": False}], "attach_volume", v)
        await self.run("echo kept > /data/kept.txt && sync", sid)
        listed = (await self.call("list_volumes", {})).structured_content
        check(any(x["name"] == vol for x in listed["volumes"]), "list_volumes", listed)
        r = await self.call("snapshot_sandbox", {"sandbox_id": sid}, ok=False)
        check(self.code(r) == "conflict", "no snapshot while a volume is attached", r.meta)
        d = (await self.call("detach_volume", {"volume": vol, "sandbox_id": sid})).structured_content
        check(d["attachments"] == [], "detach_volume", d)
        r = await self.run("test -e /data/kept.txt && echo mounted || echo gone", sid)
        check(r["stdout"] == "gone\n", "detached: unmounted", r)

        # Egress: a policy by address and name, replaced at once; a bad entry is a typed error.
        e = (await self.call("set_egress_policy", {"sandbox_id": sid, "deny_by_default": True, "allow": ["203.0.113.0/24", "*.example.org"]})).structured_content
        check(e == {"deny_by_default": True, "allow": ["203.0.113.0/24", "*.example.org"], "deny": []}, "set_egress_policy", e)
        r = await self.call("set_egress_policy", {"sandbox_id": sid, "allow": ["localhost"]}, ok=False)
        check(self.code(r) == "invalid_request", "set_egress_policy: bad entry", r.meta)
        e = (await self.call("set_egress_policy", {"sandbox_id": sid})).structured_content
        check(e == {"deny_by_default": False, "allow": [], "deny": []}, "set_egress_policy: open", e)

    async def has_matplotlib(self, sid: str) -> bool:
        r = await self.run("python3 -c 'import matplotlib' 2>/dev/null && echo yes || echo no", sid)
        return r["stdout"] == "yes\n"


def leaves(e: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    subs = getattr(e, "exceptions", None)
    return [leaf for sub in subs for leaf in leaves(sub)] if subs else [e]


async def session(target, mode: str, label: str, args) -> None:
    async with Client(target, mode=mode, read_timeout_seconds=600) as c:
        template = args.code_template if label == "http-modern" else None
        suite = Suite(c, label, args.http.removesuffix("/mcp"), args.key, template)
        await (suite.quick() if args.quick else suite.full())


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True, help="the server's /mcp URL")
    ap.add_argument("--key", required=True)
    ap.add_argument("--stdio", help="path of the platinum binary (runs `platinum mcp`)")
    ap.add_argument("--stdio-arg", action="append", default=[], help="extra argument after `mcp`")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--code-template", help="template with matplotlib for the HTTP run (e.g. code-interpreter-v1)")
    ap.add_argument("--only", choices=["http", "stdio"], help="one transport only")
    args = ap.parse_args()

    runs = []
    if args.only in (None, "http"):
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {args.key}"})
        runs.append(("http-modern", lambda: streamable_http_client(args.http, http_client=http), "auto"))
        runs.append(("http-legacy", lambda: streamable_http_client(args.http, http_client=http), "legacy"))
    if args.stdio and args.only in (None, "stdio"):
        params = StdioServerParameters(command=args.stdio, args=["mcp", *args.stdio_arg], env=dict(os.environ))
        runs.append(("stdio-legacy", lambda: params, "legacy"))
        runs.append(("stdio-modern", lambda: params, "auto"))
    failed = 0
    for i, (label, target, mode) in enumerate(runs):
        # The first run of each transport is the full one; the other era is a quick check.
        full = not args.quick and label in ("http-modern", "stdio-legacy")
        args_for = argparse.Namespace(**{**vars(args), "quick": not full})
        try:
            await session(target(), mode, label, args_for)
            print(f"PASS {label}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            for leaf in leaves(e):
                print(f"FAIL {label}: {type(leaf).__name__}: {leaf}", flush=True)
                if not isinstance(leaf, Failure):
                    traceback.print_exception(leaf)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
