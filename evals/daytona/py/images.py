"""Declarative images through the Python SDK, built in real builder VMs: snapshot.create from an
Image (apt, pip, env, workdir) with its build log streamed to on_logs, the snapshot under
daytona.snapshot (get by its Daytona name, list), a sandbox from it that has what the image
installed, snapshot.delete; create(CreateSandboxFromImageParams) building an image within the
create and reusing it for the next create of the same image; a failing image (build_failed with
the failure as the reason); and images with local files, refused clearly (no object storage)."""

import os
import tempfile
import time
import uuid

from common import check, client, delete_all, expect_error, main
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    DaytonaError,
    DaytonaNotFoundError,
    Image,
    Resources,
)

# Builds run in VMs (slow under emulation): generous limits.
BUILD_TIMEOUT = 900


def run(s, command):
    r = s.process.exec(command)
    check(r.exit_code == 0, f"{command!r} exits 0", (r.exit_code, r.result))
    return r.result.strip()


def snapshot_from_image(d, tag, made):
    # Upper case, '/' and ':' as Daytona names have them; Platinum maps the name to a template.
    name = f"Images-Py/{tag}:v1"
    image = (
        Image.base("python:3.11")
        .run_commands("apt-get update && apt-get install -y jq", "python3 -m pip install six")
        .env({"GREETING": "hi there"})
        .workdir("/srv")
    )
    logs = []
    snap = d.snapshot.create(
        CreateSnapshotParams(name=name, image=image, resources=Resources(cpu=1, memory=1)),
        on_logs=logs.append,
        timeout=BUILD_TIMEOUT,
    )
    own = [line for line in logs if not line.startswith(("Creating snapshot", "Created snapshot"))]
    check(any("jq" in line for line in own), "the build log reached on_logs", logs[-20:])
    check(snap.name == name and snap.state.value == "active", "created active", (snap.name, snap.state))
    check(snap.cpu == 1 and snap.mem == 1 and not snap.general, "its size", snap)

    got = d.snapshot.get(name)
    check(got.id == snap.id and got.state.value == "active", "snapshot.get by its name", got)
    check(got.build_info is not None and "jq" in got.build_info.dockerfile_content, "its Dockerfile", got.build_info)
    check(d.snapshot.get(snap.id).name == name, "snapshot.get by id")
    check(name in [x.name for x in d.snapshot.list(limit=200).items], "snapshot.list shows it")

    s = d.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=300)
    made.append(s)
    check(s.snapshot == name, "the sandbox's snapshot", s.snapshot)
    check(run(s, "jq --version").startswith("jq-"), "jq installed by apt")
    run(s, "python3 -c 'import six'")
    check(run(s, "echo $GREETING") == "hi there", "ENV reaches the sandbox")
    run(s, "test -d /srv")
    expect_error(lambda: d.snapshot.delete(name), DaytonaError, "deleting a snapshot a sandbox uses")
    d.delete(s)
    made.remove(s)

    d.snapshot.delete(name)
    expect_error(lambda: d.snapshot.get(name), DaytonaNotFoundError, "deleted snapshot")


def sandbox_from_image(d, tag, made):
    image = Image.base("debian:12").run_commands(f"echo built-{tag} > /built.txt")
    started = time.monotonic()
    a = d.create(CreateSandboxFromImageParams(image=image), timeout=BUILD_TIMEOUT)
    built_in = time.monotonic() - started
    made.append(a)
    check(a.state.value == "started", "started once built", a.state)
    check(run(a, "cat /built.txt") == f"built-{tag}", "the image's file")
    template = a.snapshot
    check(template.startswith("img-"), "sandboxes of an image run its template", template)

    built = d.snapshot.get(template)
    check(built.state.value == "active" and "built-" in built.build_info.dockerfile_content, "the image's template is a snapshot", built)

    started = time.monotonic()
    b = d.create(CreateSandboxFromImageParams(image=image), timeout=300)
    again_in = time.monotonic() - started
    made.append(b)
    check(b.snapshot == template, "the same image, the same template", (b.snapshot, template))
    check(run(b, "cat /built.txt") == f"built-{tag}", "the file in the second sandbox")
    again = d.snapshot.get(template)
    check(again.build_info.updated_at == built.build_info.updated_at, "the second create built nothing", (built.build_info, again.build_info))
    check(again_in < built_in, "the second create is faster", (built_in, again_in))
    print(f"  image: built and started in {built_in:.1f}s, again in {again_in:.1f}s", flush=True)
    for s in (a, b):
        d.delete(s)
        made.remove(s)
    d.snapshot.delete(template)


def failing_image(d, tag):
    name = f"images-py-fail-{tag}"
    image = Image.base("debian:12").run_commands("echo about to fail", "exit 3")
    logs = []
    e = expect_error(
        lambda: d.snapshot.create(CreateSnapshotParams(name=name, image=image), on_logs=logs.append, timeout=BUILD_TIMEOUT),
        DaytonaError,
        "a failing build",
    )
    check("exit" in str(e) and "3" in str(e), "the failure is named", str(e))
    snap = d.snapshot.get(name)
    check(snap.state.value == "build_failed" and "exit 3" in (snap.error_reason or ""), "build_failed with its reason", snap)
    check(any("exit" in line for line in logs), "the failing build's log", logs[-10:])
    d.snapshot.delete(name)
    expect_error(lambda: d.snapshot.get(name), DaytonaNotFoundError, "deleted failed snapshot")

    e = expect_error(
        lambda: d.create(CreateSandboxFromImageParams(image=Image.base("debian:12").run_commands(f"exit 4 # {tag}")), timeout=BUILD_TIMEOUT),
        DaytonaError,
        "a create from a failing image",
    )
    check("exit" in str(e) and "4" in str(e), "the create names the failure", str(e))


def refusals(d, tag):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("local")
    try:
        local = Image.base("debian:12").add_local_file(f.name, "/app/local.txt")
        e = expect_error(lambda: d.snapshot.create(CreateSnapshotParams(name=f"images-local-{tag}", image=local)), DaytonaError, "local files")
        check("object storage" in str(e), "local files need object storage", str(e))
        e = expect_error(lambda: d.create(CreateSandboxFromImageParams(image=local)), DaytonaError, "local files in a create")
        check("object storage" in str(e), "local files need object storage (create)", str(e))
    finally:
        os.unlink(f.name)
    e = expect_error(
        lambda: d.snapshot.create(CreateSnapshotParams(name=f"images-alpine-{tag}", image=Image.base("alpine:3.20").run_commands("true"))),
        DaytonaError,
        "an image Platinum cannot build on",
    )
    check("alpine" in str(e), "the image is named", str(e))
    e = expect_error(lambda: d.snapshot.create(CreateSnapshotParams(name="base", image=Image.base("debian:12").run_commands("true"))), DaytonaError, "a built-in template's name")


def body():
    d = client()
    tag = uuid.uuid4().hex[:8]
    made = []
    try:
        refusals(d, tag)
        snapshot_from_image(d, tag, made)
        sandbox_from_image(d, tag, made)
        failing_image(d, tag)
    finally:
        delete_all(d, made)


main("python images", body)
