"""Files through the Python SDK: write and read (text, bytes, stream, file-like, gzip),
write_files, list with depth, exists, get_info, make_dir, rename, remove, file metadata (envd
0.6.2), signed download/upload URLs (routed by their signature under E2B_SANDBOX_URL), watch_dir
(polled, with entries and network mounts allowed, and streamed through AsyncSandbox), paths that
climb out of the home, an oversized upload, a missing file and an unknown user."""

import asyncio
import io
import time
import urllib.error
import urllib.request

from common import check, raises, step, upload_limit
from e2b import (
    AsyncSandbox,
    AuthenticationException,
    FileNotFoundException,
    FileType,
    Sandbox,
    SandboxException,
)
from e2b.sandbox.filesystem.filesystem import WriteEntry
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType

sbx = Sandbox.create(timeout=300)
try:
    with step("write and read text, bytes, stream"):
        info = sbx.files.write("notes/hello.txt", "héllo\n")
        check(info.path == "/home/user/notes/hello.txt" and info.name == "hello.txt", f"{info}")
        check(sbx.files.read("/home/user/notes/hello.txt") == "héllo\n", "text")
        blob = bytes(range(256)) * 1000
        sbx.files.write("/home/user/blob.bin", blob)
        check(sbx.files.read("blob.bin", format="bytes") == blob, "bytes")
        check(b"".join(sbx.files.read("blob.bin", format="stream")) == blob, "stream")
        check(sbx.commands.run("sha256sum blob.bin").stdout.split()[0] == __import__("hashlib").sha256(blob).hexdigest(), "guest sees the same bytes")

    with step("file-like (octet-stream) and gzip uploads, gzip download"):
        sbx.files.write("/home/user/stream.txt", io.BytesIO(b"streamed" * 1000))
        check(sbx.files.read("stream.txt") == "streamed" * 1000, "file-like upload")
        sbx.files.write("/home/user/zipped.txt", "zip" * 5000, gzip=True)
        check(sbx.files.read("zipped.txt", gzip=True) == "zip" * 5000, "gzip both ways")

    with step("write_files, list with depth, exists, get_info"):
        written = sbx.files.write_files([
            WriteEntry(path="/home/user/tree/a.txt", data="a"),
            WriteEntry(path="/home/user/tree/sub/b.txt", data=b"bb"),
        ])
        check(sorted(w.path for w in written) == ["/home/user/tree/a.txt", "/home/user/tree/sub/b.txt"], f"{written}")
        top = sbx.files.list("/home/user/tree")
        check(sorted(e.name for e in top) == ["a.txt", "sub"], f"{top}")
        deep = sbx.files.list("/home/user/tree", depth=2)
        check(sorted(e.path for e in deep) == ["/home/user/tree/a.txt", "/home/user/tree/sub", "/home/user/tree/sub/b.txt"], f"{deep}")
        kinds = {e.name: e.type for e in deep}
        check(kinds["sub"] == FileType.DIR and kinds["b.txt"] == FileType.FILE, f"{kinds}")
        check(sbx.files.exists("/home/user/tree/a.txt") and not sbx.files.exists("/home/user/nope"), "exists")
        meta = sbx.files.get_info("/home/user/tree/sub/b.txt")
        check(meta.size == 2 and meta.owner == "user" and meta.permissions == "-rw-r--r--", f"{meta}")
        # As envd: a link carries what it finally leads to (absolute target, the target's mode;
        # envd's `type` is the target's, and this SDK shows `is_symlink` links as SYMLINK).
        sbx.commands.run("ln -s ../../etc/hostname /home/user/link && ln -s tree /home/user/dirlink")
        link = sbx.files.get_info("/home/user/link")
        check(link.type == FileType.SYMLINK and link.symlink_target == "/etc/hostname" and link.mode == 0o644, f"{link}")
        dirlink = sbx.files.get_info("/home/user/dirlink")
        check(dirlink.symlink_target == "/home/user/tree" and dirlink.mode == 0o755, f"{dirlink}")

    with step("make_dir, rename, remove"):
        check(sbx.files.make_dir("/home/user/made/deep") is True, "created")
        check(sbx.files.make_dir("/home/user/made/deep") is False, "exists already")
        moved = sbx.files.rename("/home/user/tree/a.txt", "/home/user/made/a2.txt")
        check(moved.path == "/home/user/made/a2.txt" and not sbx.files.exists("/home/user/tree/a.txt"), "rename")
        sbx.files.remove("/home/user/tree")
        check(not sbx.files.exists("/home/user/tree"), "tree removed")
        sbx.files.remove("/home/user/tree")  # removing what is not there is fine, as in envd

    with step("file metadata: set by writes, listed, kept by rename, cleared by overwrite"):
        w = sbx.files.write("/home/user/meta.txt", "v1", metadata={"Owner": "ada", "stage": "draft"})
        check(w.metadata == {"owner": "ada", "stage": "draft"}, f"keys in lower case: {w}")
        streamed = sbx.files.write_files(
            [WriteEntry(path="/home/user/meta-stream.bin", data=io.BytesIO(b"x"))], metadata={"kind": "blob"})
        check(streamed[0].metadata == {"kind": "blob"}, f"octet-stream upload: {streamed}")
        # Set from inside the sandbox, as an extended attribute: the SDK sees it too.
        sbx.commands.run("python3 -c \"import os; os.setxattr('meta.txt', 'user.e2b.by-hand', b'yes')\"")
        info = sbx.files.get_info("/home/user/meta.txt")
        check(info.metadata == {"owner": "ada", "stage": "draft", "by-hand": "yes"}, f"{info}")
        listed = {e.name: e.metadata for e in sbx.files.list("/home/user")}
        check(listed["meta.txt"] == info.metadata and listed["notes"] is None, f"{listed}")
        moved = sbx.files.rename("/home/user/meta.txt", "/home/user/meta2.txt")
        check(moved.metadata == info.metadata, f"rename keeps it: {moved}")
        sbx.files.write("/home/user/meta2.txt", "v2")
        check(sbx.files.get_info("/home/user/meta2.txt").metadata is None, "an overwrite clears it")

    with step("signed download_url / upload_url, routed by their signature"):
        def fetch(url, data=None):
            req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
            if data is not None:
                req.add_header("Content-Type", "application/octet-stream")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        url = sbx.download_url("/home/user/notes/hello.txt")
        check("signature=" in url and sbx.sandbox_id not in url, f"the URL names no sandbox: {url}")
        check(fetch(url) == (200, "héllo\n".encode()), "signed download")
        status, _ = fetch(sbx.download_url("/home/user/notes/hello.txt", use_signature_expiration=60))
        check(status == 200, f"download with an expiration: {status}")
        status, _ = fetch(sbx.upload_url("/home/user/uploaded.txt", use_signature_expiration=60), b"via url")
        check(status == 200 and sbx.files.read("/home/user/uploaded.txt") == "via url", f"signed upload: {status}")
        expired = sbx.download_url("/home/user/notes/hello.txt", use_signature_expiration=1)
        time.sleep(2.5)
        status, body = fetch(expired)
        check(status == 401 and b"expired" in body, f"an expired URL is refused: {status} {body!r}")
        status, _ = fetch(url.replace("hello.txt", "other.txt"))
        check(status == 404, f"a signature for another path names no sandbox: {status}")

    with step("absolute paths outside the home belong to the user"):
        info = sbx.files.write("/opt/app/config.json", "{}")
        owners = sbx.commands.run("stat -c %U /opt/app /opt/app/config.json").stdout.split()
        check(owners == ["user", "user"], f"owners {owners}")
        check(sbx.files.make_dir("/srv/data") is True, "mkdir under /")
        check(sbx.commands.run("touch /srv/data/x && echo ok").stdout == "ok\n", "the user can write there")

    with step("paths that climb out of the home stay in the sandbox"):
        info = sbx.files.write("../../../tmp/escape.txt", "inside")
        check(info.path == "/tmp/escape.txt", f"{info.path}")
        check(sbx.commands.run("cat /tmp/escape.txt").stdout == "inside", "landed in the sandbox's /tmp")
        listing = sbx.files.list("/home/user/../..")
        check("etc" in [e.name for e in listing], "listing / through ..")

    with step("errors: missing file, directory read, unknown user"):
        raises(FileNotFoundException, lambda: sbx.files.read("/home/user/missing.txt"), "missing")
        raises(FileNotFoundException, lambda: sbx.files.list("/home/user/missing-dir"), "missing dir")
        raises(SandboxException, lambda: sbx.files.read("/home/user"), "read a directory")
        raises(AuthenticationException, lambda: sbx.files.read("notes/hello.txt", user="nosuchuser"), "user")

    limit = upload_limit()
    if limit is not None:
        with step("oversized upload is refused, the sandbox keeps working"):
            e = raises(SandboxException, lambda: sbx.files.write("/tmp/big.bin", b"\0" * (limit + 1), use_octet_stream=True), "too large")
            check("limit" in str(e), f"{e}")
            e = raises(SandboxException, lambda: sbx.files.write("/tmp/big2.bin", b"\0" * (limit + 1)), "too large multipart")
            check(not sbx.files.exists("/tmp/big2.bin"), "nothing left behind")
            check(sbx.files.read("notes/hello.txt") == "héllo\n", "still serving")

    with step("watch_dir (polled)"):
        sbx.files.make_dir("/home/user/watched")
        w = sbx.files.watch_dir("/home/user/watched", recursive=True)
        sbx.files.write("/home/user/watched/new.txt", "1")
        sbx.commands.run("mkdir -p /home/user/watched/d && echo x > /home/user/watched/d/inner.txt && rm /home/user/watched/new.txt")
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and ("d/inner.txt", FilesystemEventType.CREATE) not in seen:
            seen.extend((e.name, e.type) for e in w.get_new_events())
            time.sleep(0.3)
        w.stop()
        for expected in [("new.txt", FilesystemEventType.CREATE), ("new.txt", FilesystemEventType.WRITE),
                         ("d", FilesystemEventType.CREATE), ("d/inner.txt", FilesystemEventType.CREATE)]:
            check(expected in seen, f"{expected} in {seen}")
        check(not any(".platinum-" in name for name, _ in seen), f"temporary files leaked: {seen}")

    with step("watch_dir with entries and network mounts allowed (envd 0.6.3, 0.6.4)"):
        sbx.files.make_dir("/home/user/entries")
        w = sbx.files.watch_dir("/home/user/entries", include_entry=True, allow_network_mounts=True)
        sbx.files.write("/home/user/entries/e.txt", "12345")
        events = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(e.name == "e.txt" and e.type == FilesystemEventType.WRITE for e in events):
            events.extend(w.get_new_events())
            time.sleep(0.3)
        w.stop()
        with_entry = [e for e in events if e.name == "e.txt" and e.entry is not None]
        check(with_entry, f"events carry entries: {events}")
        entry = with_entry[-1].entry
        check((entry.name, entry.path, entry.type, entry.size) == ("e.txt", "/home/user/entries/e.txt", FileType.FILE, 5), f"{entry}")

    with step("watch_dir (streamed, async SDK)"):
        async def streamed():
            asbx = await AsyncSandbox.connect(sbx.sandbox_id)
            events = []
            got = asyncio.Event()

            def on_event(e):
                events.append((e.name, e.type))
                if e.name == "async.txt" and e.type == FilesystemEventType.WRITE:
                    got.set()

            handle = await asbx.files.watch_dir("/home/user/watched", on_event)
            await asbx.files.write("/home/user/watched/async.txt", "x")
            await asyncio.wait_for(got.wait(), 15)
            await handle.stop()
            return events

        events = asyncio.run(streamed())
        check(("async.txt", FilesystemEventType.CREATE) in events, f"{events}")
        raises(FileNotFoundException, lambda: sbx.files.watch_dir("/home/user/no-dir"), "watch a missing dir")
finally:
    Sandbox.kill(sbx.sandbox_id)
