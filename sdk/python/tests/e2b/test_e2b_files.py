"""The official E2B Python SDK's ``sandbox.files`` against zeroboot's envd
(served by the VMM from the sandbox's own file system). The guest's view is
checked through our ``POST /v1/sandboxes/{id}/exec``, which runs Python in
the same live sandbox. Run by ``run-e2b-tests.sh``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request

import pytest

e2b = pytest.importorskip("e2b")

from e2b import AsyncSandbox, Sandbox  # noqa: E402
from e2b.exceptions import (  # noqa: E402
    FileNotFoundException,
    InvalidArgumentException,
    NotEnoughSpaceException,
    SandboxException,
)
from e2b.sandbox.filesystem.filesystem import FileType  # noqa: E402
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType  # noqa: E402


@pytest.fixture()
def sbx(e2b_env):
    sb = Sandbox.create("python", timeout=120)
    try:
        yield sb
    finally:
        sb.kill()


def guest(server, sandbox_id: str, code: str) -> dict:
    """Run Python in the live sandbox (zeroboot's own endpoint)."""
    req = urllib.request.Request(
        "%s/v1/sandboxes/%s/exec" % (server.url, sandbox_id),
        data=json.dumps({"code": code}).encode(),
        headers={"Authorization": "Bearer " + server.key, "Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=60) as r:
        out = json.loads(r.read())
    assert out["exit_code"] == 0, out
    return out


def test_write_then_read_text_and_bytes(sbx):
    info = sbx.files.write("/home/user/hello.txt", "Hello, World!\n")
    assert (info.name, info.path, info.type) == ("hello.txt", "/home/user/hello.txt", FileType.FILE)
    assert sbx.files.read("/home/user/hello.txt") == "Hello, World!\n"
    # Relative paths are relative to /home/user.
    assert sbx.files.read("hello.txt") == "Hello, World!\n"

    blob = os.urandom(1 << 20)
    sbx.files.write("data/blob.bin", blob)
    assert bytes(sbx.files.read("data/blob.bin", format="bytes")) == blob
    # The octet-stream and gzip uploads.
    sbx.files.write("gz.bin", blob, gzip=True)
    assert bytes(sbx.files.read("gz.bin", format="bytes", gzip=True)) == blob
    sbx.files.write("oct.bin", blob, use_octet_stream=True)
    assert bytes(sbx.files.read("oct.bin", format="bytes")) == blob
    # Several files in one multipart upload.
    written = sbx.files.write_files(
        [{"path": "m/one.txt", "data": "1"}, {"path": "/tmp/two.txt", "data": b"2"}]
    )
    assert [w.path for w in written] == ["/home/user/m/one.txt", "/tmp/two.txt"]
    assert sbx.files.read("/tmp/two.txt") == "2"


def test_guest_code_sees_written_files_and_the_sdk_sees_the_guests(e2b_env, sbx):
    rows = "".join("%d,%d\n" % (i, i * i) for i in range(100))
    sbx.files.write("/home/user/a.csv", rows)
    out = guest(e2b_env, sbx.sandbox_id, "print(len(open('/home/user/a.csv').readlines()))")
    assert out["stdout"] == "100\n"
    guest(
        e2b_env,
        sbx.sandbox_id,
        "import os; os.makedirs('/home/user/made', exist_ok=True); "
        "open('/home/user/made/by_guest.txt', 'w').write('from the guest')",
    )
    assert sbx.files.read("made/by_guest.txt") == "from the guest"


def test_list_exists_rename_remove_make_dir_get_info(sbx):
    assert sbx.files.make_dir("proj/src") is True
    assert sbx.files.make_dir("proj/src") is False
    sbx.files.write("proj/src/main.py", "print(1)\n")
    sbx.files.write("proj/README", "r")

    top = sbx.files.list("proj")
    assert [(e.name, e.type) for e in top] == [("README", FileType.FILE), ("src", FileType.DIR)]
    deep = sbx.files.list("/home/user/proj", depth=2)
    assert [e.path for e in deep] == [
        "/home/user/proj/README",
        "/home/user/proj/src",
        "/home/user/proj/src/main.py",
    ]

    info = sbx.files.get_info("proj/src/main.py")
    assert (info.type, info.size, info.path) == (FileType.FILE, 9, "/home/user/proj/src/main.py")
    assert info.permissions == "-rw-r--r--"
    assert sbx.files.get_info("proj").type == FileType.DIR

    assert sbx.files.exists("proj/README")
    assert not sbx.files.exists("proj/nope")
    moved = sbx.files.rename("proj/README", "proj/docs/README.md")
    assert moved.path == "/home/user/proj/docs/README.md"
    assert not sbx.files.exists("proj/README")
    assert sbx.files.read("proj/docs/README.md") == "r"

    sbx.files.remove("proj/src")
    assert not sbx.files.exists("proj/src/main.py")
    assert not sbx.files.exists("proj/src")
    with pytest.raises(FileNotFoundException):
        sbx.files.remove("proj/src")


def test_watch_dir_sees_a_file_the_guest_creates(e2b_env, sbx):
    sbx.files.make_dir("watched")
    w = sbx.files.watch_dir("/home/user/watched")
    try:
        guest(e2b_env, sbx.sandbox_id, "open('/home/user/watched/new.txt', 'w').write('x')")
        sbx.files.write("watched/sdk.txt", "y")
        sbx.files.rename("watched/sdk.txt", "watched/renamed.txt")
        sbx.files.remove("watched/new.txt")
        deadline = time.monotonic() + 5
        events = []
        while time.monotonic() < deadline:
            events += w.get_new_events()
            if any(e.type == FilesystemEventType.REMOVE for e in events):
                break
            time.sleep(0.05)
        got = [(e.name, e.type) for e in events]
        for want in [
            ("new.txt", FilesystemEventType.CREATE),
            ("new.txt", FilesystemEventType.WRITE),
            ("sdk.txt", FilesystemEventType.CREATE),
            ("sdk.txt", FilesystemEventType.RENAME),
            ("renamed.txt", FilesystemEventType.CREATE),
            ("new.txt", FilesystemEventType.REMOVE),
        ]:
            assert want in got, got
    finally:
        w.stop()
    with pytest.raises(SandboxException):
        w.get_new_events()


def test_streamed_watch_dir_recursive(e2b_env):
    async def main():
        sb = await AsyncSandbox.create("python", timeout=60)
        try:
            events = []
            h = await sb.files.watch_dir("/home/user", events.append, recursive=True)
            await asyncio.to_thread(
                guest,
                e2b_env,
                sb.sandbox_id,
                "import os; os.makedirs('/home/user/a/b'); open('/home/user/a/b/c.txt', 'w').write('c')",
            )
            for _ in range(100):
                if ("a/b/c.txt", FilesystemEventType.WRITE) in [(e.name, e.type) for e in events]:
                    break
                await asyncio.sleep(0.05)
            await h.stop()
            return [(e.name, e.type) for e in events]
        finally:
            await sb.kill()

    got = asyncio.run(main())
    assert ("a", FilesystemEventType.CREATE) in got, got
    assert ("a/b/c.txt", FilesystemEventType.CREATE) in got, got
    assert ("a/b/c.txt", FilesystemEventType.WRITE) in got, got


def test_errors(sbx):
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/home/user/does-not-exist.txt")
    with pytest.raises(InvalidArgumentException, match="is a directory"):
        sbx.files.read("/home/user")
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info("/nope/nope")
    with pytest.raises(FileNotFoundException):
        sbx.files.list("/nope")
    sbx.files.write("plain.txt", "x")
    with pytest.raises(InvalidArgumentException):
        sbx.files.list("plain.txt")
    with pytest.raises(InvalidArgumentException):
        sbx.files.write("plain.txt/under", "x")


def test_paths_stay_inside_the_sandbox(e2b_env, sbx):
    # As root: `/` is root's (the default user may not create there).
    info = sbx.files.write("../../../../../../../../escape.txt", "inside", user="root")
    assert info.path == "/escape.txt"
    assert not os.path.exists("/escape.txt")
    assert sbx.files.read("/../../../escape.txt") == "inside"
    out = guest(e2b_env, sbx.sandbox_id, "print(open('/escape.txt').read())")
    assert out["stdout"] == "inside\n"
    # A symlink the guest makes to / resolves inside the sandbox too.
    guest(e2b_env, sbx.sandbox_id, "import os; os.symlink('/../..', '/home/user/up')")
    assert sbx.files.read("up/escape.txt") == "inside"


def test_an_upload_over_the_disk_limit_is_refused(sbx):
    # The server's default disk limit per sandbox is 256 MiB.
    big = b"\0" * ((256 << 20) + (1 << 20))
    with pytest.raises(NotEnoughSpaceException):
        sbx.files.write("big.bin", big, use_octet_stream=True)
    assert not sbx.files.exists("big.bin")
    # The sandbox keeps working.
    sbx.files.write("small.txt", "ok")
    assert sbx.files.read("small.txt") == "ok"


def test_killed_sandbox_and_secure_sandbox(e2b_env):
    sb = Sandbox.create("python", secure=True, timeout=60)
    try:
        sb.files.write("s.txt", "secure")
        assert sb.files.read("s.txt") == "secure"
        # Without the access token, envd refuses.
        req = urllib.request.Request(
            e2b_env.url + "/files?path=s.txt",
            headers={"E2b-Sandbox-Id": sb.sandbox_id, "E2b-Sandbox-Port": "49983"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(req, timeout=10)
        assert e.value.code == 401
        # A signed URL needs no token (a proxy names the sandbox: the
        # SDK's URL is E2B_SANDBOX_URL's when it is set).
        signed = urllib.request.Request(
            sb.download_url("s.txt"),
            headers={"E2b-Sandbox-Id": sb.sandbox_id},
        )
        with opener.open(signed, timeout=10) as r:
            assert r.read() == b"secure"
        up = urllib.request.Request(
            sb.upload_url("up.txt", use_signature_expiration=60),
            data=b"signed upload",
            headers={"E2b-Sandbox-Id": sb.sandbox_id, "Content-Type": "application/octet-stream"},
            method="POST",
        )
        with opener.open(up, timeout=10) as r:
            assert json.loads(r.read())[0]["path"] == "/home/user/up.txt"
        assert sb.files.read("up.txt") == "signed upload"
        forged = urllib.request.Request(
            sb.download_url("s.txt").replace("s.txt", "up.txt"),
            headers={"E2b-Sandbox-Id": sb.sandbox_id},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(forged, timeout=10)
        assert e.value.code == 401
    finally:
        sb.kill()
    with pytest.raises(SandboxException, match="was not found"):
        sb.files.read("s.txt")
