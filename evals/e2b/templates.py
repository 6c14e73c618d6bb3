"""Template builds through the Python SDK: Template.build of a Python image with apt and pip
packages, a copied file and a start command (its logs stream back; a sandbox of it has the
packages, the file, and the server the start command started), an identical rebuild served from
the cache, build_in_background + get_build_status of a build whose last step changed (only that
step runs), a failing step (BuildException naming the step and its exit code, and no template
left), Template.exists, the upload URL refusing a bad signature, listing, and deletion.

On a server whose sandboxes have no internet, the apt and pip steps are replaced by two RUN steps
that need none; everything else is the same. E2B_FLOW_ONLINE=1 (the CI test sets it) makes a
missing internet a failure instead."""

import os
import re
import shutil
import tempfile
import time

import httpx
from common import check, raises, step, tag, wait_until
from e2b import BuildException, Sandbox, Template, wait_for_port

label = tag()
name = f"flow-{label}"
failing = f"{name}-fail"
api = os.environ["E2B_API_URL"].rstrip("/")
headers = {"X-API-KEY": os.environ["E2B_API_KEY"]}
page = f"<h1>{label}</h1>\n"
context = tempfile.mkdtemp(prefix="e2b-template-flow-")
with open(os.path.join(context, "index.html"), "w") as f:
    f.write(page)
STEP_LINE = re.compile(r"^\[(\d+)/(\d+)\] ")
# Reachability only (-k): a host behind a TLS-inspecting proxy hands its CA to builds, not sandboxes.
ONLINE_CHECK = "curl -sk -o /dev/null -m 15 https://pypi.org/simple/six/ && echo online || true"


def template(extra_cmd=None):
    t = Template(file_context_path=context).from_python_image("3.11")
    if online:
        t = t.apt_install(["jq"]).pip_install(["six"])
    else:
        t = t.run_cmd("mkdir -p /opt/flow && echo root > /opt/flow/by", user="root").run_cmd("echo user > /home/user/by")
    t = t.copy("index.html", "/home/user/site/index.html")
    if extra_cmd:
        t = t.run_cmd(extra_cmd)
    return t.set_start_cmd("cd /home/user/site && python3 -m http.server 8080", wait_for_port(8080))


def step_lines(messages):
    """The server's `[i/n] ...` lines, by step number."""
    lines = {}
    for m in messages:
        match = STEP_LINE.match(m)
        if match:
            lines.setdefault(int(match.group(1)), []).append(m)
    return lines


def build(t, template_name, **kwargs):
    """Template.build, returning the log messages it streamed and how long it took."""
    messages = []
    started = time.monotonic()
    Template.build(t, template_name, on_build_logs=lambda e: messages.append(e.message), **kwargs)
    return messages, time.monotonic() - started


def served(sandbox):
    return sandbox.commands.run("curl -s localhost:8080/index.html").stdout


with step("do sandboxes reach the internet?"):
    probe = Sandbox.create(timeout=120)
    online = probe.commands.run(ONLINE_CHECK).stdout.strip() == "online"
    probe.kill()
    print(f"    {'online: apt and pip steps' if online else 'offline: RUN steps instead of apt and pip'}", flush=True)
    if os.environ.get("E2B_FLOW_ONLINE") == "1":
        check(online, "sandboxes reach the internet (E2B_FLOW_ONLINE=1: the apt and pip steps must run)")

made = []
try:
    with step("Template.build: apt, pip, copy, start command; logs stream back"):
        check(not Template.exists(name), "the name is free before the build")
        messages, took = build(template(), name, cpu_count=1, memory_mb=512)
        print(f"    first build took {took:.0f}s", flush=True)
        lines = step_lines(messages)
        check(sorted(lines) == [1, 2, 3], f"server log lines for steps 1-3: {messages}")
        check(any("done in" in m for m in messages), f"steps ran: {messages}")

    with step("Template.exists / alias_exists"):
        check(Template.exists(name), "built template exists")
        check(Template.alias_exists(name), "alias_exists")
        check(not Template.exists(f"nosuch-{label}"), "unknown name does not exist")

    with step("Sandbox.create(<template>): packages (or files), file and the start command's server"):
        s = Sandbox.create(name, timeout=300)
        made.append(s)
        if online:
            check(s.commands.run("jq --version").stdout.startswith("jq-"), "jq installed")
            s.commands.run('python3 -c "import six"')
        else:
            check(s.files.read("/opt/flow/by").strip() == "root", "first RUN step's file")
            check(s.files.read("/home/user/by").strip() == "user", "second RUN step's file")
        check(s.files.read("/home/user/site/index.html") == page, "copied file")
        wait_until(lambda: served(s) == page, "the start command's server to serve the file", timeout=60)
        s.kill()

    with step("identical rebuild: every step CACHED, none run"):
        messages, took = build(template(), name, cpu_count=1, memory_mb=512)
        print(f"    cached rebuild took {took:.0f}s", flush=True)
        lines = step_lines(messages)
        check(sorted(lines) == [1, 2, 3], f"step lines: {messages}")
        check(all(all("CACHED" in m for m in ls) for ls in lines.values()), f"all CACHED: {lines}")
        check(not any("done in" in m for m in messages), f"no step ran: {messages}")
        check(any("Skipping upload" in m for m in messages), "the unchanged file was not uploaded again")
        check(took < 60, f"a cached rebuild is fast ({took:.0f}s)")

    with step("build_in_background + get_build_status: only the changed last step runs"):
        info = Template.build_in_background(
            template("echo changed > /home/user/changed"), name, cpu_count=1, memory_mb=512
        )
        check(info.template_id == name and info.build_id, f"{info}")
        messages, offset, status = [], 0, None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            status = Template.get_build_status(info, logs_offset=offset)
            offset += len(status.log_entries)
            messages.extend(e.message for e in status.log_entries)
            if status.status.value in ("ready", "error") and not status.log_entries:
                break
            time.sleep(1)
        check(status is not None and status.status.value == "ready", f"status {status}")
        lines = step_lines(messages)
        check(sorted(lines) == [1, 2, 3, 4], f"step lines: {messages}")
        check(all("CACHED" in m for n in (1, 2, 3) for m in lines[n]), f"steps 1-3 CACHED: {lines}")
        check(not any("CACHED" in m for m in lines[4]), f"step 4 ran: {lines[4]}")
        check(any("done in" in m for m in lines[4]), f"step 4 ran: {lines[4]}")
        s = Sandbox.create(name, timeout=300)
        made.append(s)
        check(s.files.read("/home/user/changed").strip() == "changed", "the new step's file")
        wait_until(lambda: served(s) == page, "the server of the rebuilt template", timeout=60)
        s.kill()

    with step("a failing step: BuildException naming the step and its exit code, no template"):
        bad = Template().from_base_image().run_cmd("echo before").run_cmd("exit 3")
        e = raises(BuildException, lambda: Template.build(bad, failing), "failing build")
        check("step 2" in str(e) and "3" in str(e), f"message names the step and code: {e}")
        check(not Template.exists(failing), "a failed build leaves no template")

    with step("upload URLs: a bad signature is refused"):
        digest = "0" * 64
        link = httpx.get(f"{api}/templates/{name}/files/{digest}", headers=headers)
        check(link.status_code == 201, f"{link.status_code} {link.text}")
        url = link.json()["url"]
        check(link.json()["present"] is False, f"{link.json()}")
        tampered = url.replace("signature=", "signature=0")
        check(httpx.put(tampered, content=b"x").status_code == 401, "tampered signature refused")
        check(httpx.put(url.split("?")[0], content=b"x").status_code == 401, "unsigned upload refused")

    with step("list and get the template"):
        listed = httpx.get(f"{api}/v2/templates", headers=headers).json()
        mine = [t for t in listed if t["templateID"] == name]
        check(len(mine) == 1 and mine[0]["cpuCount"] == 1 and mine[0]["memoryMB"] == 512, f"{mine}")
        check(any(t["templateID"] == "base" and t["public"] for t in listed), "built-in base listed")
        one = httpx.get(f"{api}/templates/{name}", headers=headers).json()
        check(one["builds"] and one["builds"][0]["status"] == "ready", f"{one}")
finally:
    for s in made:
        Sandbox.kill(s.sandbox_id)
    shutil.rmtree(context, ignore_errors=True)
    deleted = httpx.delete(f"{api}/templates/{name}", headers=headers)
    print(f"  deleting the template: {deleted.status_code}", flush=True)

with step("delete the template"):
    check(deleted.status_code == 204, f"delete: {deleted.status_code} {deleted.text}")
    check(not Template.exists(name), "deleted template no longer exists")
    gone = httpx.delete(f"{api}/templates/{name}", headers=headers)
    check(gone.status_code == 404, f"second delete: {gone.status_code}")
