"""Volumes through the Python SDK: Volume.create, Sandbox.create(volume_mounts={"/data": vol})
(a file written there as the default user, then the sandbox killed), a second sandbox mounting
the same volume by name at another path reads the file back, Volume.get_info / list; while a
sandbox has it mounted read-write, mounting it into another sandbox and destroying it are
refused (409); Volume.destroy once it is free (then gone: a second destroy is False)."""

from common import check, raises, step, tag
from e2b import Sandbox, SandboxException, Volume, VolumeException, VolumeNotFoundException

label = tag()
name = f"vol-{label}"
TEXT = "persisted across sandboxes\n"

with step("Volume.create"):
    vol = Volume.create(name)
    check(vol.name == name and vol.volume_id, f"created {vol.volume_id} {vol.name}")
    raises(VolumeException, lambda: Volume.create(name), "a second volume of the same name")

made = []
try:
    with step("mount it at /data, write a file as the default user, kill the sandbox"):
        a = Sandbox.create(volume_mounts={"/data": vol}, timeout=300, metadata={"flow": label})
        made.append(a)
        mounts = a.get_info().volume_mounts
        check(mounts == [{"name": name, "path": "/data"}], f"get_info reports the mount: {mounts}")
        a.files.write("/data/notes/hello.txt", TEXT)
        owner = a.commands.run("stat -c %U /data/notes/hello.txt && sync").stdout.strip()
        check(owner == "user", f"written by the default user, not {owner!r}")
        a.kill()
        made.remove(a)

    with step("a second sandbox mounts it by name at /mnt/shared and reads the file"):
        b = Sandbox.create(volume_mounts={"/mnt/shared": name}, timeout=300, metadata={"flow": label})
        made.append(b)
        got = b.files.read("/mnt/shared/notes/hello.txt")
        check(got == TEXT, f"the file outlived the first sandbox: {got!r}")
        check(b.get_info().volume_mounts == [{"name": name, "path": "/mnt/shared"}], "the second mount")
        info = Volume.get_info(vol.volume_id)
        check((info.volume_id, info.name) == (vol.volume_id, name), f"get_info {info}")
        check(any(v.volume_id == vol.volume_id and v.name == name for v in Volume.list()), "listed")

    with step("while mounted read-write: no second mount, no destroy (409)"):
        e = raises(SandboxException, lambda: made.append(Sandbox.create(volume_mounts={"/data": vol}, timeout=60)), "a second mount")
        check(e.status_code == 409, f"a 409: {e.status_code} {e}")
        e = raises(VolumeException, lambda: Volume.destroy(vol.volume_id), "destroying a mounted volume")
        check(str(e).startswith("409"), f"a 409: {e}")

    with step("kill the second sandbox, Volume.destroy: gone"):
        b.kill()
        made.remove(b)
        check(Volume.destroy(vol.volume_id) is True, "destroyed")
        check(Volume.destroy(vol.volume_id) is False, "a second destroy is False")
        raises(VolumeNotFoundException, lambda: Volume.get_info(vol.volume_id), "get_info of a destroyed volume")
        check(all(v.volume_id != vol.volume_id for v in Volume.list()), "no longer listed")
        vol = None
finally:
    for s in made:
        Sandbox.kill(s.sandbox_id)
    if vol is not None:
        Volume.destroy(vol.volume_id)
