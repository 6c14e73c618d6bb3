"""Volumes through the Python SDK: daytona.volume.get(name, create=True) (a not-found error
before), create(volumes=[VolumeMount(volume_id, "/data")]) and a file written there as the
default user, the sandbox deleted; a second sandbox mounting the volume by name at another path
reads the file back and reports the mount; volume.list; while a sandbox has it mounted
read-write, mounting it into another sandbox and deleting it are conflicts (409); a subpath is
refused (400); volume.delete once it is free (then not found)."""

import uuid

from common import check, client, delete_all, expect_error, main
from daytona import (
    CreateSandboxFromSnapshotParams,
    DaytonaBadRequestError,
    DaytonaConflictError,
    DaytonaNotFoundError,
    VolumeMount,
)

TEXT = b"persisted across sandboxes\n"


def mounted(s):
    return [(v.volume_id, v.mount_path) for v in s.volumes or []]


def body():
    d = client()
    name = f"vol-{uuid.uuid4().hex[:8]}"
    expect_error(lambda: d.volume.get(name), DaytonaNotFoundError, "a volume not made yet")
    vol = d.volume.get(name, create=True)
    check(vol.name == name and vol.id and vol.state == "ready", "volume.get(create=True)", vol)
    check(d.volume.get(name, create=True).id == vol.id, "a second get(create=True) finds it")
    made = []

    def create(volume_id, mount_path, **mount):
        s = d.create(CreateSandboxFromSnapshotParams(volumes=[VolumeMount(volume_id=volume_id, mount_path=mount_path, **mount)]))
        made.append(s)
        return s

    try:
        a = create(vol.id, "/data")
        check(mounted(a) == [(vol.id, "/data")], "the sandbox reports its volume", mounted(a))
        a.fs.upload_file(TEXT, "/data/hello.txt")
        r = a.process.exec("stat -c %U /data/hello.txt && sync")
        check(r.exit_code == 0 and r.result.strip() == "user", "written by the default user", r.result)
        d.delete(a)

        b = create(name, "/mnt/shared")
        got = b.fs.download_file("/mnt/shared/hello.txt")
        check(got == TEXT, "the file outlived the first sandbox", got)
        check(mounted(d.get(b.id)) == [(vol.id, "/mnt/shared")], "get reports the mount", mounted(d.get(b.id)))
        check(vol.id in [v.id for v in d.volume.list()], "volume.list")

        expect_error(lambda: create(vol.id, "/data"), DaytonaConflictError, "a second mount while mounted read-write")
        expect_error(lambda: d.volume.delete(vol), DaytonaConflictError, "deleting a mounted volume")
        e = expect_error(lambda: create(vol.id, "/data", subpath="users/alice"), DaytonaBadRequestError, "a subpath")
        check("subpath" in str(e), "the refusal names the subpath", str(e))

        d.delete(b)
        d.volume.delete(vol)
        expect_error(lambda: d.volume.get(name), DaytonaNotFoundError, "the deleted volume")
        check(vol.id not in [v.id for v in d.volume.list()], "gone from volume.list")
        vol = None
    finally:
        delete_all(d, made)
        if vol is not None:
            d.volume.delete(vol)


main("python volumes", body)
