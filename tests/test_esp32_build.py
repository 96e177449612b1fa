"""tools/esp32-unix.sh (`make esp32-unix`): without a MicroPython source it fetches the pinned
commit once (offline here: from a local repository), and where it cannot it says in one line that
the 32-bit run is skipped and why, and exits 0 (make test goes on); with one, a build whose inputs
did not change is not redone."""
import glob
import os
import shutil
import signal
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT
from citynode import vesp32

SCRIPT = ROOT / "tools" / "esp32-unix.sh"


PINNED = "1c3c201149f37fe8d81246191b3127bb198d6306"
NO_SOURCE = ("esp32-unix: 32-bit run skipped: no MicroPython source (set MICROPY_SRC to a checkout or a source "
             "tarball; none in ../shared/micropython/; ")


def run(script, out, *args, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY_")}
    e.update(env, ESP32_UNIX_OUT=str(out))
    return subprocess.run(["bash", str(script)] + list(args), capture_output=True, text=True, env=e, timeout=600)


def bare_checkout(tmp_path):
    """A copy of the script in a checkout with no ../shared beside it."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "tools")
    return repo / "tools" / "esp32-unix.sh"


def shared_tarball():
    src = os.environ.get("MICROPY_SRC", "")
    if src.endswith(".tar.gz") and os.path.isfile(src):
        return src
    found = sorted(glob.glob(str(ROOT.parent / "shared" / "micropython" / "micropython-*-src.tar.gz")))
    return found[0] if found else None


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A git repository standing in for MicroPython's: the shared source tarball committed (where
    this checkout has none beside it, the two files the script looks for). (url, commit)."""
    d = tmp_path_factory.mktemp("upstream")
    tarball = shared_tarball()
    if tarball:
        with tarfile.open(tarball) as t:
            t.extractall(d, filter="tar")
        tree = d / "micropython"
    else:
        tree = d / "micropython"
        (tree / "py").mkdir(parents=True)
        (tree / "ports" / "unix").mkdir(parents=True)
        (tree / "py" / "mpconfig.h").write_text("/* stands in for MicroPython's */\n")
        (tree / "ports" / "unix" / "Makefile").write_text("all:\n")

    def git(*a):
        return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t",
                               "-c", "commit.gpgsign=false"] + list(a),
                              check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    git("add", "-A", "-f")
    git("commit", "-q", "-m", "MicroPython, as in the shared tarball")
    return "file://%s" % tree, git("rev-parse", "HEAD")


def test_no_source_anywhere_is_one_line_and_not_a_failure(tmp_path):
    # a checkout with no ../shared beside it, no MICROPY_SRC, and fetching off
    out = tmp_path / "out"
    out.mkdir()
    (out / "micropython-frozen").write_text("a stale build")
    p = run(bare_checkout(tmp_path), out, MICROPY_GIT_URL="")
    assert p.returncode == 0 and p.stdout == "", p
    assert p.stderr.splitlines() == [NO_SOURCE + "fetching is off (MICROPY_GIT_URL is empty))"]
    assert (out / "SKIPPED").read_text().strip() == p.stderr.strip()
    assert not (out / "micropython-frozen").exists()     # never test another checkout's firmware
    assert not (out / "git").exists()


def test_fetches_the_pinned_commit_once_into_the_cache(tmp_path, upstream):
    url, commit = upstream
    script, out = bare_checkout(tmp_path), tmp_path / "out"
    (out / "git" / ".fetch-killed" / "py").mkdir(parents=True)      # a fetch that was SIGKILLed
    (out / "git" / ".fetch-killed" / "py" / "mpconfig.h").write_text("half")
    p = run(script, out, "--print-src", MICROPY_GIT_URL=url, MICROPY_COMMIT=commit)
    tree = out / "git" / commit
    assert p.returncode == 0 and p.stdout == "%s\n" % tree and p.stderr == "", p
    assert os.listdir(out / "git") == [commit]                  # the half tree is gone, never used
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert head.stdout.strip() == commit
    theirs = Path(url[len("file://"):]) / "py" / "mpconfig.h"
    assert (tree / "py" / "mpconfig.h").read_bytes() == theirs.read_bytes()
    # once: the cache is used with the server gone
    p = run(script, out, "--print-src", MICROPY_GIT_URL="file://%s/gone" % tmp_path, MICROPY_COMMIT=commit)
    assert p.returncode == 0 and p.stdout == "%s\n" % tree, p


def test_an_unreachable_server_is_a_one_line_skip(tmp_path):
    out = tmp_path / "out"
    url = "file://%s/nowhere" % tmp_path
    p = run(bare_checkout(tmp_path), out, "--print-src", MICROPY_GIT_URL=url)
    assert p.returncode == 0 and p.stdout == "", p
    assert p.stderr.splitlines() == [NO_SOURCE + "fetching 1c3c2011 from %s failed: '%s/nowhere' does not appear "
                                     "to be a git repository)" % (url, tmp_path)]
    assert (out / "SKIPPED").read_text().strip() == p.stderr.strip()
    assert os.listdir(out) == ["SKIPPED"]                       # no cache dir, no half tree


def test_a_repository_without_the_commit_is_a_skip(tmp_path, upstream):
    url, commit = upstream                      # MICROPY_COMMIT unset: the pinned commit, not in it
    out = tmp_path / "out"
    p = run(bare_checkout(tmp_path), out, "--print-src", MICROPY_GIT_URL=url)
    assert p.returncode == 0 and p.stdout == "" and len(p.stderr.splitlines()) == 1, p
    assert p.stderr.startswith(NO_SOURCE + "fetching 1c3c2011 from %s failed: " % url)
    assert "not our ref %s" % PINNED in p.stderr
    assert os.listdir(out) == ["SKIPPED"]


def test_a_server_that_does_not_answer_times_out(tmp_path):
    with socket.socket() as server:            # accepts connections (the kernel does), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = "http://127.0.0.1:%d/micropython" % server.getsockname()[1]
        out = tmp_path / "out"
        p = run(bare_checkout(tmp_path), out, "--print-src", MICROPY_GIT_URL=url, MICROPY_FETCH_TIMEOUT="1")
        assert p.returncode == 0 and p.stdout == "", p
        assert p.stderr.splitlines() == [NO_SOURCE + "fetching 1c3c2011 from %s failed: no answer within 1 s)" % url]
        assert os.listdir(out) == ["SKIPPED"]


def test_an_interrupted_fetch_leaves_nothing(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = "http://127.0.0.1:%d/micropython" % server.getsockname()[1]
        out = tmp_path / "out"
        e = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY_")}
        e.update(ESP32_UNIX_OUT=str(out), MICROPY_GIT_URL=url, MICROPY_FETCH_TIMEOUT="600")
        p = subprocess.Popen(["bash", str(bare_checkout(tmp_path)), "--print-src"], env=e,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            server.settimeout(60)
            conn, _ = server.accept()          # git is connected and waiting for an answer
            with conn:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=60)
                assert p.returncode != 0
                conn.settimeout(60)
                while conn.recv(4096):          # git's HTTP client was stopped too: the socket closes
                    pass
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert not (out / "git").exists()


def test_bad_arguments_change_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "micropython-frozen").write_text("a build")
    p = run(SCRIPT, out, MICROPY_COMMIT="1c3c2011")
    assert p.returncode == 2 and p.stderr == ("esp32-unix: MICROPY_COMMIT=1c3c2011 is not a full commit hash "
                                              "(40 hex digits)\n"), p
    p = run(SCRIPT, out, "--frobnicate")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "unknown argument '--frobnicate'" in p.stderr
    assert os.listdir(out) == ["micropython-frozen"]


def test_a_micropy_src_that_is_not_there(tmp_path):
    p = run(SCRIPT, tmp_path, MICROPY_SRC=str(tmp_path / "nowhere"))
    assert p.returncode == 0 and len(p.stderr.splitlines()) == 1 and "does not exist" in p.stderr, p
    d = tmp_path / "notmp"
    d.mkdir()
    p = run(SCRIPT, tmp_path, MICROPY_SRC=str(d))
    assert p.returncode == 0 and "is not a MicroPython source tree" in p.stderr, p


def test_an_unchanged_build_is_not_redone():
    if vesp32.binary("frozen") is None:
        pytest.skip(vesp32.why_missing())
    subprocess.run(["bash", str(SCRIPT)], capture_output=True, timeout=600, check=True)   # up to date
    before = vesp32.binary("frozen").stat().st_mtime_ns
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "building" not in p.stderr, p.stderr
    assert vesp32.binary("frozen").stat().st_mtime_ns == before
