"""Users in a sandbox, as E2B's SDK sees them: commands run as ``user``
(uid 1000, HOME=/home/user) unless ``user="root"`` is asked, files the SDK
writes belong to the user it writes as, and ``user`` cannot change what is
root's. Run by ``run-e2b-tests.sh``; fixtures as in test_e2b_sdk.py.
"""

from __future__ import annotations

import pytest

e2b = pytest.importorskip("e2b")

from e2b import Sandbox  # noqa: E402
from e2b.exceptions import AuthenticationException  # noqa: E402
from e2b.sandbox.commands.command_handle import CommandExitException  # noqa: E402


@pytest.fixture()
def sbx(e2b_env):
    sb = Sandbox.create("base", timeout=120)
    try:
        yield sb
    finally:
        sb.kill()


def test_commands_run_as_user_by_default_and_as_root_when_asked(sbx):
    assert sbx.commands.run("whoami").stdout == "user\n"
    assert sbx.commands.run("id -u").stdout == "1000\n"
    assert sbx.commands.run("id").stdout.startswith("uid=1000(user) gid=1000(user)")
    r = sbx.commands.run("echo $HOME $USER $LOGNAME; pwd")
    assert r.stdout == "/home/user user user\n/home/user\n"
    assert sbx.commands.run("whoami", user="root").stdout == "root\n"
    assert sbx.commands.run("id -u; echo $HOME; pwd", user="root").stdout == "0\n/root\n/root\n"
    # The user owns its home and what it makes there.
    r = sbx.commands.run("stat -c %U:%G /home/user; touch f; stat -c %U:%G f")
    assert r.stdout == "user:user\nuser:user\n"


def test_user_cannot_write_what_is_roots_but_root_can(sbx):
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo x > /etc/x")
    assert e.value.exit_code == 1
    assert "Permission denied" in e.value.stderr
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("python3 -c 'import os; os.setuid(0)'")
    assert "PermissionError" in e.value.stderr
    sbx.commands.run("echo x > /etc/x && chown user /etc/x", user="root")
    assert sbx.commands.run("stat -c %U /etc/x; cat /etc/x").stdout == "user\nx\n"
    # Now the user's: it may write it.
    sbx.commands.run("echo y > /etc/x")
    assert sbx.commands.run("cat /etc/x", user="root").stdout == "y\n"


def test_files_are_written_as_the_user_asked(sbx):
    sbx.files.write("/home/user/a.txt", "hello")
    assert sbx.commands.run("stat -c %U:%G /home/user/a.txt").stdout == "user:user\n"
    sbx.files.write("/tmp/r.txt", "hello", user="root")
    assert sbx.commands.run("stat -c %U /tmp/r.txt").stdout == "root\n"
    info = sbx.files.get_info("/home/user/a.txt")
    assert info.owner == "user"
    # The user cannot write into /etc through the file API either.
    with pytest.raises(Exception) as e:
        sbx.files.write("/etc/y", "no")
    assert "permission denied" in str(e.value).lower()
    sbx.files.write("/etc/y", "yes", user="root")
    assert sbx.files.read("/etc/y", user="root") == "yes"
    with pytest.raises(Exception):
        sbx.files.make_dir("/root/d")
    assert sbx.files.make_dir("/root/d", user="root")


def test_an_unknown_user_is_refused(sbx):
    with pytest.raises(AuthenticationException):
        sbx.commands.run("whoami", user="nobody-here")
