"""Volumes through the Python SDK: Volume.create; the content API on the detached volume
(write_file, a nested file, list, get_info, exists, read_file, make_dir, update_metadata,
remove; bad paths and a wrong token refused); Sandbox.create(volume_mounts={"/data": vol}) reads
the files written through the API, writes one as the default user, and the content API reads
and writes through the running sandbox; then the sandbox is killed, a second sandbox mounting
the same volume by name at another path reads the files back, Volume.get_info / list; while a
sandbox has it mounted read-write, mounting it into another sandbox and destroying it are
refused (409); once it is free the content API reads the guest's file from the image;
Volume.destroy (then gone: a second destroy is False)."""

from common import check, raises, step, tag
from e2b import (
    AuthenticationException,
    Sandbox,
    SandboxException,
    Volume,
    VolumeException,
    VolumeNotFoundException,
    VolumePathNotFoundException,
)

label = tag()
name = f"vol-{label}"
TEXT = "persisted across sandboxes\n"
API_TEXT = "written through the content API\n"
NESTED = "/deep/er/nested file.txt"

with step("Volume.create"):
    vol = Volume.create(name)
    check(vol.name == name and vol.volume_id, f"created {vol.volume_id} {vol.name}")
    raises(VolumeException, lambda: Volume.create(name), "a second volume of the same name")

with step("content API on the detached volume: write, list, stat, read, mkdir, chmod, remove"):
    check(len(vol.token or "") == 64, f"a volume token: {vol.token!r}")
    f = vol.write_file("/notes/api.txt", API_TEXT)
    check((f.type.value, f.path, f.size, f.uid, f.gid, f.mode) == ("file", "/notes/api.txt", len(API_TEXT), 1000, 1000, 0o644), f"written {f}")
    vol.write_file(NESTED, b"nested\x00bytes")
    top = {e.name: e.type.value for e in vol.list("/")}
    check(top.get("notes") == "directory" and top.get("deep") == "directory", f"listed / {top}")
    deep = [e.path for e in vol.list("/deep", depth=2)]
    check(deep == ["/deep/er", NESTED], f"listed /deep two deep: {deep}")
    check(vol.get_info("/notes/api.txt").size == len(API_TEXT), "get_info of the file")
    check(vol.exists(NESTED) and not vol.exists("/nope"), "exists")
    check(vol.read_file("/notes/api.txt") == API_TEXT, "read back as text")
    check(vol.read_file(NESTED, format="bytes") == b"nested\x00bytes", "read back as bytes")
    d = vol.make_dir("/made/sub", force=True)
    check((d.type.value, d.path, d.uid) == ("directory", "/made/sub", 1000), f"make_dir {d}")
    check(vol.update_metadata("/made", mode=0o700).mode == 0o700, "update_metadata mode")
    vol.remove("/made")
    check(not vol.exists("/made/sub") and not vol.exists("/made"), "removed with its contents")
    raises(VolumePathNotFoundException, lambda: vol.read_file("/made/sub/x"), "reading a removed path")
    e = raises(VolumeException, lambda: vol.read_file("/notes/../../etc/passwd"), "a path with ..")
    check(str(e).startswith("400"), f"a 400: {e}")
    stranger = Volume(vol.volume_id, name, token="0" * 64)
    raises(AuthenticationException, lambda: stranger.list("/"), "a wrong volume token")

made = []
try:
    with step("mount it at /data: the API's files are there; write one as the default user; the API reads and writes through the sandbox; kill it"):
        a = Sandbox.create(volume_mounts={"/data": vol}, timeout=300, metadata={"flow": label})
        made.append(a)
        mounts = a.get_info().volume_mounts
        check(mounts == [{"name": name, "path": "/data"}], f"get_info reports the mount: {mounts}")
        got = a.commands.run("cat /data/notes/api.txt").stdout
        check(got == API_TEXT, f"the sandbox reads the file written through the API: {got!r}")
        got = a.commands.run(f"stat -c %s:%U '/data{NESTED}'").stdout.strip()
        check(got == "12:user", f"and the nested one, owned by the default user: {got!r}")
        a.files.write("/data/notes/hello.txt", TEXT)
        owner = a.commands.run("stat -c %U /data/notes/hello.txt && sync").stdout.strip()
        check(owner == "user", f"written by the default user, not {owner!r}")
        check(vol.read_file("/notes/hello.txt") == TEXT, "the API reads the sandbox's file while mounted")
        names = sorted(e.name for e in vol.list("/notes"))
        check(names == ["api.txt", "hello.txt"], f"listed while mounted: {names}")
        vol.write_file("/notes/live.txt", "live")
        got = a.commands.run("cat /data/notes/live.txt && sync").stdout
        check(got == "live", f"the sandbox sees a file the API wrote while mounted: {got!r}")
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

    with step("kill the second sandbox, read through the API, Volume.destroy: gone"):
        b.kill()
        made.remove(b)
        check(vol.read_file("/notes/hello.txt") == TEXT, "the API reads the guest's file from the image")
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
