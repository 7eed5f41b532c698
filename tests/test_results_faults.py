"""Results survive a full disk and a results directory that cannot be written."""
import json
import os
import subprocess

import pytest

PAGE = 4096


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs with two pages left free."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        stat = os.statvfs(mount)
        (mount / "filler").write_bytes(b"x" * (stat.f_bavail * stat.f_frsize - 2 * PAGE))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_the_run_and_keeps_every_earlier_line(bench, tiny_tmpfs):
    bench.tests()
    result = bench.run("--mlpbench-arch=inprocess", "--mlpbench-rounds=5", f"--mlpbench-results={tiny_tmpfs}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*measured, but its results were not saved*No space left on device*",
                                 "*mlpbench: the session's summaries were not written*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    lines = (tiny_tmpfs / "runs.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["outcome"] == "passed" for line in lines)
    assert not list(tiny_tmpfs.rglob(".*.tmp"))  # no half-written file left


def test_a_results_directory_that_cannot_be_written_is_a_usage_error(bench):
    bench.tests()
    (bench.path / "afile").write_text("")
    result = bench.run("--mlpbench-arch=inprocess", "--mlpbench-results=afile/results")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlpbench-results: cannot write results to *afile/results: Not a directory*"])
