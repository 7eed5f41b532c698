"""``dvc``: each run as a DVC pipeline (``dvc.yaml``, one stage per step, a
``foreach`` stage per fan-out step) reproduced with ``dvc repro``.

The project is made once per session (``dvc init --no-scm``); each run gets a
fresh directory in it with its own ``dvc.yaml``. A stage's deps are the JSON
outputs of the stages it needs and its out is its own JSON outputs, so DVC
sees, and orders by, the data flow. Every ``dvc repro`` is forced and skips
the run cache, so a round never turns into a no-op.

Fan-out: DVC fixes a pipeline's stages when ``dvc repro`` starts, but how many
tasks a fan-out step has is known only once its upstream steps ran. So a run
goes in waves: ``dvc.yaml`` holds every stage whose shape is known, ``dvc repro``
runs the new ones, and a fan-out step joins the file (as ``foreach`` over its
task indices, with everything downstream of it) after the wave that produced
its inputs. A workload without fan-out is one wave, one ``dvc repro``.

A stage runs ``python -m pytest_mlpbench.step`` with its upstream outputs
files (``--upstream``): the step entry point merges them, which in a DVC
pipeline no driver can do between stages.

Native hand-off (``RunSpec.handoff == "native"``): each task writes into a
directory of its own in the run's directory, ``files/<KEY>`` (``files/shard.${item}``
for a fan-out's tasks; ``--artifacts``), declared an ``outs`` of its stage.
After the stage's command, DVC hashes that directory (md5 of every file) and
commits it to the project's cache, ``.dvc/cache``, with its default cache type
``reflink,copy``: where the filesystem cannot reflink (ext4, overlayfs), a full
copy of every byte (the task's own files stay in place). A stage that needs
the step lists the directories of all its tasks in its ``deps`` (DVC orders by
them and records their hashes in ``dvc.lock``) and gets each as ``--carried
KEY=<that directory>``. That hashing and copying, by ``dvc repro`` between
the stages, is what native hand-off costs here. After the run the task
directories are moved into the run's artifacts.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from pytest_mlpbench.architectures.base import Architecture, RunFailed, Unavailable, tail
from pytest_mlpbench.architectures.subprocesses import task_failure
from pytest_mlpbench.model.workload import Workload, fanout_items, step_inputs
from pytest_mlpbench.step import read_outputs
from pytest_mlpbench.step.handoff import task_key

ENV = {"DVC_NO_ANALYTICS": "1"}
CONFIG = """[core]
    no_scm = True
    analytics = false
    check_update = false
    site_cache_dir = {site_cache}
"""


class Dvc(Architecture):
    name = "dvc"
    handoff_modes = ("shared", "native")  # native: each task's directory is an out of its stage

    def check(self):
        try:
            metadata.version("dvc")
        except metadata.PackageNotFoundError:
            raise Unavailable("dvc: DVC is not installed; pip install dvc") from None

    def versions(self):
        return {"dvc": metadata.version("dvc")}

    def open(self, session_dir):
        self.project = Path(session_dir) / "project"
        self.project.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"]
        done = subprocess.run(cmd, cwd=self.project, capture_output=True, text=True, timeout=120,
                              env={**os.environ, **ENV})
        if done.returncode != 0:
            raise Unavailable(f"dvc: `dvc init --no-scm` failed: {done.stdout}{done.stderr}")
        # the site cache would otherwise go to /var/tmp/dvc and outlive the session
        config = CONFIG.format(site_cache=Path(session_dir) / "site-cache")
        (self.project / ".dvc" / "config").write_text(config)

    def run(self, workload, run):
        stage_dir = self.project / run.spec.run_id
        stage_dir.mkdir()
        (stage_dir / "out").mkdir()
        (stage_dir / "spec.json").write_text(run.spec.to_json())
        native = run.spec.handoff == "native"
        try:
            self._run_waves(workload, run, Pipeline(workload, stage_dir, native=native))
        finally:
            # keep the run's dvc.yaml and dvc.lock with the run, out of the project's index
            shutil.move(stage_dir, run.dir / "dvc")
            if native and (run.dir / "dvc" / "files").is_dir():
                for task_dir in (run.dir / "dvc" / "files").iterdir():
                    task_dir.rename(run.artifacts / task_dir.name)

    def _run_waves(self, workload, run, pipeline):
        wave = 0
        while new := pipeline.grow():
            pipeline.write()
            targets = [f"dvc.yaml:{name}" for name in pipeline.roots(new)]
            cmd = [sys.executable, "-m", "dvc", "repro", "--force", "--no-run-cache"]
            cmd += ["--downstream", *targets] if wave else ["dvc.yaml"]
            try:
                run.call(cmd, cwd=pipeline.dir, env=ENV, log_name=f"dvc-repro-{wave}")
            except RunFailed as exc:
                if type(exc) is not RunFailed:  # a timeout says so itself
                    raise
                raise RunFailed(stage_failure(run, run.logs[-1]) + str(exc)) from None
            pipeline.done.update(new)
            wave += 1
        missing = [s.name for s in workload.steps if s.name not in pipeline.done]
        if missing:
            raise RunFailed(f"dvc: steps {missing} never became runnable")


#: DVC's error for a stage whose command failed: "failed to reproduce 'shard@2': failed to run: CMD, exited with -9"
_STAGE_FAILED = re.compile(r"failed to reproduce '(?P<stage>[^'@]+)(?:@(?P<index>\d+))?'.*?exited with (?P<code>-?\d+)")


def stage_failure(run, log: Path) -> str:
    """``step 'NAME' failed: ERROR (its process exited 1); `` for the stage
    DVC names as failed in ``log``; empty where it names none."""
    match = _STAGE_FAILED.search(tail(log, 200))
    if not match:
        return ""
    index = None if match["index"] is None else int(match["index"])
    return f"{task_failure(run, match['stage'], index, int(match['code']), 'its stage command')}; "


class Pipeline:
    """The stages of one run's ``dvc.yaml``, grown wave by wave."""

    def __init__(self, workload: Workload, directory: Path, native: bool = False):
        self.workload = workload
        self.dir = directory
        self.native = native
        self.stages: dict[str, dict] = {}
        self.width: dict[str, int] = {}  # tasks of each fan-out step written so far
        self.done: set[str] = set()

    def grow(self) -> list[str]:
        """Add every step whose stage can now be written; return their names."""
        new = []
        for step in self.workload.steps:
            if step.name in self.stages or not all(n in self.stages for n in step.needs):
                continue
            if step.foreach:
                if not all(n in self.done for n in step.needs):
                    continue
                self.width[step.name] = len(fanout_items(step, self.upstream_inputs(step)))
            self.stages[step.name] = self.stage(step)
            new.append(step.name)
        return new

    def upstream_inputs(self, step) -> dict:
        produced = {need: read_outputs([self.dir / p for p in self.outputs_of(need)],
                                       self.workload.step(need).foreach)
                    for need in step.needs}
        return step_inputs(self.workload, step, produced)

    def outputs_of(self, name: str) -> list[str]:
        if name in self.width:
            return [f"out/{name}.{i}.json" for i in range(self.width[name])]
        return [f"out/{name}.json"]

    def tasks_of(self, name: str) -> list[str]:
        """The KEYs of a step's tasks (see :func:`pytest_mlpbench.step.handoff.task_key`)."""
        if name in self.width:
            return [task_key(name, i) for i in range(self.width[name])]
        return [name]

    def stage(self, step) -> dict:
        deps = [path for need in step.needs for path in self.outputs_of(need)]
        upstream = [f"--upstream={need}={path}" for need in step.needs for path in self.outputs_of(need)]
        cmd = [sys.executable, "-m", "pytest_mlpbench.step", "--spec", "spec.json", "--step", step.name, *upstream]
        item = ".${item}" if step.foreach else ""  # DVC fills in each fan-out task's index
        outs = [f"out/{step.name}{item}.json"]
        tail = ("--index ${item} " if step.foreach else "") + f"--outputs {shlex.quote(f'out/{step.name}')}{item}.json"
        if self.native:
            carried = [key for need in step.needs for key in self.tasks_of(need)]
            deps += [f"files/{key}" for key in carried]
            cmd += [f"--carried={key}={self.dir / 'files' / key}" for key in carried]
            outs.append(f"files/{step.name}{item}")
            tail += f" --artifacts {shlex.quote(str(self.dir / 'files' / step.name))}{item}"
        stage = {"cmd": f"{shlex.join(cmd)} {tail}", "deps": ["spec.json", *deps], "outs": outs}
        return {"foreach": list(range(self.width[step.name])), "do": stage} if step.foreach else stage

    def roots(self, names: list[str]) -> list[str]:
        """The stages among ``names`` that need none of the others: with
        ``--downstream`` they reproduce exactly ``names``."""
        return [n for n in names if not set(self.workload.step(n).needs) & set(names)]

    def write(self) -> None:
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        with open(self.dir / "dvc.yaml", "w") as f:
            yaml.dump({"stages": self.stages}, f)
