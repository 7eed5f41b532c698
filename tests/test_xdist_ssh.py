"""A remote pytest-xdist worker through xdist's own transport (``--tx
ssh=...``), for real: an sshd on 127.0.0.1 that the test starts, and on the
"remote" side the project installed as a user would (a venv of its own, the
benchmarks at the worker's ``chdir``). Next to it, a local worker (``--tx
popen``): each architecture runs on one of them, and the controller merges
what both measured."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import REGISTER, TESTS, bench_source
from sshd import SshServer, SshdUnavailable

ROOT = TESTS.parent
ARCHS = ("inprocess", "subprocess")
#: Written by the remote project's conftest.py: where the worker found pytest_mlpbench, and with which Python.
ORIGIN = "mlpbench-origin.txt"
REMOTE_CONFTEST = REGISTER + f"""

import sys
from pathlib import Path

import pytest_mlpbench

Path({ORIGIN!r}).write_text(sys.executable + "\\n" + pytest_mlpbench.__file__ + "\\n")
"""


@pytest.fixture(scope="module")
def sshd():
    """A throwaway sshd, skipped with the reason where none is installed."""
    try:
        server = SshServer()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    server.start()
    yield server
    server.stop()


def _not_the_project(directory: str, names: list[str]) -> set[str]:
    """What a copy of the working tree leaves out: build output, caches, results and venvs."""
    skip = {name for name in names if name in ("__pycache__", ".pytest_cache") or name.endswith(".egg-info")}
    if Path(directory) == ROOT:  # top level only: pytest_mlpbench/results is a package
        skip |= {name for name in names if name.startswith(".") or name in ("results", "build")}
    return skip


@pytest.fixture(scope="module")
def remote_python(tmp_path_factory) -> Path:
    """The Python of a fresh venv with this project pip-installed into it (not
    editable, from a copy of the working tree, so that the build writes nothing
    here). Its other packages are this venv's, through a path in a ``.pth``
    file: a plain path, so that this venv's editable install of the project
    (an import hook in its own ``.pth``) stays out."""
    base = tmp_path_factory.mktemp("remote")
    source, env = base / "source", base / "venv"
    shutil.copytree(ROOT, source, ignore=_not_the_project)
    venv.create(env, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    (site / "mlpbench-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", str(source)], check=True, timeout=300)
    found = subprocess.run([str(python), "-c", "import pytest_mlpbench; print(pytest_mlpbench.__file__)"],
                           cwd=base, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert Path(found).is_relative_to(site), found
    return python


def test_a_remote_worker_over_ssh_sends_its_runs_to_the_controller(bench, sshd, remote_python, tmp_path_factory):
    tests = bench_source("linear")
    bench.tests(tests)
    # The remote side: the benchmark project at the worker's chdir, with the
    # workloads it imports (here: the fakes), as on another machine.
    remote = tmp_path_factory.mktemp("remote-project")
    (remote / "conftest.py").write_text(REMOTE_CONFTEST)
    (remote / "test_bench.py").write_text(tests)
    shutil.copy(TESTS / "fakes.py", remote)
    login = sshd.ssh(str(remote_python), "-c", "import sys; print(sys.executable)")
    assert login.returncode == 0 and login.stdout.strip() == str(remote_python), login
    tx = f"ssh={sshd.xdist_ssh}//python={remote_python}//chdir={remote}"

    result = bench.run(f"--mlpbench-arch={','.join(ARCHS)}", "--mlpbench-rounds=2", "--mlpbench-scale=smoke",
                       "-d", "--tx", tx, "--tx", "popen", "--max-worker-restart=0")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK

    executable, module = (remote / ORIGIN).read_text().splitlines()
    assert executable == str(remote_python)
    assert Path(module).is_relative_to(remote_python.parent.parent)  # the remote venv's install, not this checkout
    workers = json.loads((bench.path / "bench.json").read_text())["machine_info"]["mlpbench"]["workers"]
    ssh_ids = [wid for wid, w in workers.items() if w["tx"].startswith("ssh=")]
    assert len(ssh_ids) == 1 and len(workers) == 2, workers
    ssh_id, = ssh_ids
    assert workers[ssh_id]["executable"] == str(remote_python)
    local_id, = set(workers) - {ssh_id}
    assert workers[local_id]["tx"] == "popen" and workers[local_id]["executable"] == sys.executable

    benchmarks = bench.benchmarks()
    assert sorted(b["fullname"] for b in benchmarks) == [f"test_bench.py::test_linear[{a}]" for a in ARCHS]
    assert all(b["stats"]["rounds"] == 2 for b in benchmarks)
    runs = bench.runs()
    assert sorted(r["architecture"] for r in runs) == sorted(ARCHS * 2)  # 2 rounds, no warm-up
    by_arch = {arch: {r["worker"] for r in runs if r["architecture"] == arch} for arch in ARCHS}
    assert all(len(ids) == 1 for ids in by_arch.values()) and set().union(*by_arch.values()) == set(workers)
    assert {r["host"] for r in runs} == {socket.gethostname()}  # the "remote" host is this one
    assert not (bench.path / "results" / "workers" / ssh_id).exists()  # the remote wrote its files over there
    assert (remote / "results" / "workers" / ssh_id / "runs.jsonl").is_file()
