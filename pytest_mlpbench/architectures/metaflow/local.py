"""``metaflow-local``: the workload as a generated FlowSpec, run by Metaflow's
local runtime (``python flow.py run``) with its datastore and metadata under
the session's directory."""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

from pytest_mlpbench.architectures.base import Architecture, RunFailed, Unavailable
from pytest_mlpbench.architectures.metaflow.client import collect
from pytest_mlpbench.architectures.metaflow.flowgen import flow_class_name, flow_source, plan
from pytest_mlpbench.architectures.subprocesses import exit_reason
from pytest_mlpbench.options import Option, positive_int

MAX_WORKERS = Option("metaflow_max_workers", "Tasks Metaflow runs at once, its run --max-workers (default: "
                     "Metaflow's own, 16).", positive_int, None, "N")


class MetaflowLocal(Architecture):
    name = "metaflow-local"
    options = (MAX_WORKERS,)
    datastore = "local"
    #: Remote tasks see neither the harness's event file nor its artifact directory.
    ship_files = False
    #: native: each task's files travel as a Metaflow artifact of that task (see :mod:`.body`)
    handoff_modes = ("shared", "native")

    def __init__(self, settings=None):
        super().__init__(settings)
        self.dir: Path | None = None

    def check(self) -> None:
        if importlib.util.find_spec("metaflow") is None:
            raise Unavailable(f"{self.name}: metaflow is not installed; pip install metaflow")
        if os.name != "posix":
            raise Unavailable(f"{self.name}: Metaflow runs on Linux and macOS only")

    def open(self, session_dir: Path) -> None:
        self.dir = Path(session_dir)
        for sub in ("home", "store/.metaflow", "flows"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        import metaflow  # noqa: F401  the client reads each run's task times: import it outside the runs

    def versions(self) -> dict[str, str]:
        return {"metaflow": importlib.metadata.version("metaflow")}

    def flow_file(self, workload) -> Path:
        """The generated flow, written once per workload and session."""
        path = self.dir / "flows" / f"{workload.name.replace('-', '_')}_flow.py"
        if not path.exists():
            path.write_text(flow_source(workload, ship_files=self.ship_files))
        return path

    def environment(self) -> dict[str, str]:
        """Metaflow's configuration for the runtime and its tasks: nothing is
        read from or written to the user's home."""
        return {
            "METAFLOW_HOME": str(self.dir / "home"),
            "METAFLOW_PROFILE": "",
            "METAFLOW_USER": "mlpbench",
            "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(self.dir / "store"),
            "METAFLOW_DEFAULT_DECOSPECS": "",
        }

    def top_level_options(self) -> list[str]:
        return [f"--datastore={self.datastore}"]

    def run_options(self) -> list[str]:
        return []

    def command(self, flow_file: Path, spec_json: str, run_id_file: Path) -> list[str]:
        cmd = [sys.executable, str(flow_file), "--no-pylint", "--metadata=local", "--environment=local"]
        cmd += self.top_level_options()
        cmd += ["run", "--run-id-file", str(run_id_file)] + self.run_options()
        workers = self.option("metaflow_max_workers")
        if workers:
            cmd += ["--max-workers", str(workers)]
        return cmd + ["--mlpb_spec", spec_json]

    def run(self, workload, run) -> None:
        flow_file = self.flow_file(workload)
        run_id_file = run.dir / "metaflow-run-id"
        cmd = self.command(flow_file, run.spec.to_json(), run_id_file)
        try:
            run.call(cmd, cwd=self.dir, env=self.environment(), log_name="metaflow")
        except RunFailed as exc:
            with contextlib.suppress(Exception):  # the error in hand matters more than missing timings
                self._collect(workload, run, run_id_file)
            headline = failure_summary(run.logs[-1]) if run.logs else None
            killed = self.killed_tasks(workload, run_id_file) if type(exc) is RunFailed else []
            if killed:
                headline = "; ".join(killed)
            where = f" failed in {headline}" if headline else ""
            raise type(exc)(f"Metaflow run of {flow_class_name(workload)}{where}: {exc}") from None
        try:
            self._collect(workload, run, run_id_file)
        except Exception as exc:
            raise RunFailed(f"Metaflow run of {flow_class_name(workload)} ended, but its client cannot read "
                            f"the tasks: {exc!r}") from exc

    def killed_tasks(self, workload, run_id_file: Path) -> list[str]:
        """``RUN/STEP/TASK: its process was killed by SIGKILL`` for every task
        the runtime saw die of a signal: its log says only "Task failed.", but it
        keeps each attempt's return code in the local datastore."""
        if self.datastore != "local" or not run_id_file.exists():
            return []
        run_id = run_id_file.read_text().strip()
        flow_dir = self.dir / "store" / ".metaflow" / flow_class_name(workload) / run_id
        found = []
        for path in sorted(flow_dir.glob("*/*/*.runtime")):
            try:
                code = json.loads(path.read_text()).get("return_code")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(code, int) and (code < 0 or code > 128):
                task = path.parent
                found.append(f"{run_id}/{task.parent.name}/{task.name}: step {task.parent.name!r}: "
                             f"its process {exit_reason(code)}")
        return found

    def _collect(self, workload, run, run_id_file: Path) -> None:
        if not run_id_file.exists():
            return
        collect(run, flow_class_name(workload), run_id_file.read_text().strip(), self.dir / "store",
                plan(workload), shipped=self.ship_files)


#: A task's line in the runtime's log: "DATE TIME [RUN/STEP/TASK (pid N)] MESSAGE".
_TASK_LINE = re.compile(r"^\S+ \S+ \[(?P<task>[^\]]+?) \(pid \d+\)\] ?(?P<msg>.*)$")


def failure_summary(log: Path) -> str | None:
    """``"RUN/STEP/TASK: <its last message>"`` for the first task the log
    reports as failed: with Python steps, the exception line."""
    last: dict[str, str] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        match = _TASK_LINE.match(line)
        if not match:
            continue
        task, msg = match["task"], match["msg"].strip()
        if msg == "Task failed." and task in last:
            return f"{task}: {last[task]}"
        if msg:
            last[task] = msg
    return None
