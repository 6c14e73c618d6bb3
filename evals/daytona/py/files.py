"""Files, sync and async: bulk upload/download (the multipart formats), streams, list, info,
folder, move, permissions, find, search, replace, delete, and typed errors."""

import io

from common import async_sandbox, check, expect_error, main_sync_async, sandbox
from daytona import DaytonaError, DaytonaFileNotFoundError, FileDownloadRequest, FileUpload


def sync_flow():
    with sandbox() as s:
        fs = s.fs
        payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
        fs.upload_files([
            FileUpload(b"hello\n", "docs/a.txt"),
            FileUpload(payload, "/tmp/bin.dat"),
            FileUpload("é unicode ✓\n".encode(), "docs/ünï côdé.txt"),
        ])
        check(fs.download_file("docs/a.txt") == b"hello\n", "download relative path")
        check(fs.download_file("/tmp/bin.dat") == payload, "binary round trip")
        check(fs.download_file("docs/ünï côdé.txt") == "é unicode ✓\n".encode(), "non-ASCII path round trip")
        fs.upload_file(b"replaced\n", "docs/a.txt")
        check(fs.download_file("docs/a.txt") == b"replaced\n", "upload overwrites")
        res = fs.download_files([
            FileDownloadRequest(source="docs/a.txt"),
            FileDownloadRequest(source="docs/missing.txt"),
        ])
        check(res[0].result == b"replaced\n" and res[0].error is None, "bulk download ok part", res[0])
        check(res[1].error is not None and res[1].result is None, "bulk download error part", res[1])
        expect_error(lambda: fs.download_file("docs/missing.txt"), DaytonaFileNotFoundError, "missing file")
        streamed = b"".join(fs.download_file_stream("/tmp/bin.dat"))
        check(streamed == payload, "download stream")
        fs.upload_file_stream(io.BytesIO(b"from a stream\n"), "docs/stream.txt")
        check(fs.download_file("docs/stream.txt") == b"from a stream\n", "upload stream")

        names = sorted(f.name for f in fs.list_files("docs"))
        check(names == ["a.txt", "stream.txt", "ünï côdé.txt"], "list", names)
        info = fs.get_file_info("docs/a.txt")
        check(not info.is_dir and info.size == 9 and info.permissions == "0644", "info", info)
        fs.create_folder("docs/sub", "755")
        check(fs.get_file_info("docs/sub").is_dir, "folder")
        fs.move_files("docs/a.txt", "docs/sub/b.txt")
        check([f.name for f in fs.list_files("docs/sub")] == ["b.txt"], "move")
        fs.set_file_permissions("docs/sub/b.txt", mode="600")
        check(fs.get_file_info("docs/sub/b.txt").permissions == "0600", "chmod")
        fs.upload_file(b"alpha\nneedle one\nbeta needle\n", "docs/sub/c.txt")
        matches = fs.find_files("docs", "needle")
        check(sorted((m.line, m.content) for m in matches) == [(2, "needle one"), (3, "beta needle")], "find", matches)
        found = fs.search_files("docs", "*.txt").files
        check(len(found) == 4 and all(f.endswith(".txt") for f in found), "search", found)
        results = fs.replace_in_files(["docs/sub/c.txt", "docs/nope.txt"], "needle", "pin")
        check(results[0].success and not results[1].success, "replace results", results)
        check(fs.download_file("docs/sub/c.txt") == b"alpha\npin one\nbeta pin\n", "replace content")

        # Uploading where the user may not write: a typed error, and the sandbox keeps working.
        err = expect_error(lambda: fs.upload_file(b"x", "/proc/nope/x"), DaytonaError, "read-only upload")
        check("400" in str(err), "read-only upload is a 400", str(err))
        # Signed URLs: no API key, the signature is the credential; rotation revokes old URLs.
        import httpx

        url = s.download_url("docs/sub/c.txt", ttl_seconds=60)
        check(httpx.get(url).content == b"alpha\npin one\nbeta pin\n", "signed download URL")
        check(httpx.get(url.replace("signature=v1_", "signature=v1_x")).status_code == 401, "tampered URL refused")
        up = s.upload_url("docs/signed.txt")
        r = httpx.post(up, files={"file": ("signed.txt", b"via signed url\n")})
        check(r.status_code == 200 and fs.download_file("docs/signed.txt") == b"via signed url\n", "signed upload URL", r.text)
        s.rotate_signing_key()
        check(httpx.get(url).status_code == 401, "rotated key revokes old URLs")
        fs.delete_file("docs/sub", recursive=True)
        expect_error(lambda: fs.get_file_info("docs/sub"), DaytonaFileNotFoundError, "deleted folder")
        check(s.process.exec("echo alive").result == "alive\n", "sandbox still serves")


async def async_flow():
    async with async_sandbox() as s:
        await s.fs.upload_files([FileUpload(b"one", "a/b/one.txt"), FileUpload(b"two", "a/two.txt")])
        check(await s.fs.download_file("a/b/one.txt") == b"one", "async download")
        res = await s.fs.download_files([FileDownloadRequest(source="a/two.txt"), FileDownloadRequest(source="a/none")])
        check(res[0].result == b"two" and res[1].error, "async bulk download", res)
        check(sorted(f.name for f in await s.fs.list_files("a")) == ["b", "two.txt"], "async list")


main_sync_async("python files (sync + async)", sync_flow, async_flow)
