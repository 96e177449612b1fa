"""The unix-port test runner itself: a failing MicroPython test is reported as FAIL with its
traceback, a passing one as PASS, and a module that crashes is not mistaken for a pass."""
from conftest import run_mp_file


def test_runner_reports_fail_pass_and_crash(tmp_path):
    unix = tmp_path / "tests" / "unix"
    unix.mkdir(parents=True)
    f = unix / "mptest_probe.py"
    f.write_text("def test_good():\n    assert 1 + 1 == 2\n\n"
                 "def test_bad():\n    assert [1] == [2], 'lists differ'\n\n"
                 "async def test_async_bad():\n    raise OSError(5)\n")
    res = run_mp_file(f)
    assert res["test_good"] is None
    assert "AssertionError: lists differ" in res["test_bad"]
    assert "OSError: 5" in res["test_async_bad"] or "EIO" in res["test_async_bad"], res["test_async_bad"]
    assert "__crash__" not in res

    f.write_text("import no_such_module_here\ndef test_x():\n    pass\n")
    res = run_mp_file(f)
    assert "test_x" not in res and "__crash__" in res
