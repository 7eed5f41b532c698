"""Hand-written against generated: the ``chain-20`` workload as pytest-mlpbench
generates it for one architecture, timed beside the same twenty light tasks
written by hand in that framework's own idiom (``benchmarks/handwritten/FRAMEWORK/``).

    python benchmarks/handwritten/compare.py FRAMEWORK [-n PAIRS] [--warmup N] [--work DIR] [--json FILE]
    python benchmarks/handwritten/compare.py FRAMEWORK --setup-only --work DIR

FRAMEWORK is ``metaflow``, ``dvc``, ``kubeflow`` or ``mlflow``: each side is one
command, written with its working directory and environment as a script,
``WORK/generated.sh`` and ``WORK/handwritten.sh`` (``--setup-only`` writes them
and stops, for any outside timer); or ``airflow``: one Airflow 3 started with the
architecture's own server code, both DAG files in its dags folder, each run
triggered over REST.

The generated side is made by the architecture's own code (``flow_source`` and
``MetaflowLocal.command``, dvc's ``Pipeline``, ``local_dag``) and run as the
architecture runs it; kubeflow-local and mlflow run their pipeline inside the
harness's process, so there the generated command is this file's
``run-generated``, which calls the architecture's ``run`` once, as the harness does.

Timing is the same code and clock for both: after ``--warmup`` unrecorded runs of
each side, the sides alternate, generated then hand-written, ``-n`` pairs; a run
is timed on ``time.monotonic()`` from the start of its script to its exit (for
Airflow, from the trigger request to the poll, every 0.1 s, that sees the DAG run
finished). Printed: each pair's seconds and ratio generated/hand-written, both
medians and the median ratio, against the bound of 10%; then, with the same
medians, the CPU seconds of each command run (user + system of the processes it
waited for: steadier than wall time on a busy machine), or for Airflow, whose
work runs in its servers, Airflow's own DAG run start to end date.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# this folder holds folders named like the frameworks: keep them out of the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))  # workloads.scaling, for this process and (through PYTHONPATH) the steps

WORKLOAD = "workloads.scaling:chain_20"
BOUND = 1.10  # the generated pipeline may take at most 10% longer than the hand-written one
FRAMEWORKS = ("metaflow", "dvc", "kubeflow", "mlflow", "airflow")
VENV_BIN = str(Path(sys.executable).parent)
#: Second figures of each run, printed after the wall times.
FIGURES = {"cpu_s": "CPU (user + system of the processes each run waited for)",
           "airflow_dag_run_s": "Airflow's own DAG run start to end date"}


class CompareError(Exception):
    """A side could not be set up or did not run; the message says which and why."""


@dataclasses.dataclass
class Side:
    """One command to time: argv, working directory, variables added to the environment."""

    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]

    def script(self, work: Path) -> Path:
        path = work / f"{self.name}.sh"
        exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(self.env.items()))
        path.write_text(f"#!/bin/sh\n{exports}cd {shlex.quote(str(self.cwd))}\nexec {shlex.join(self.argv)}\n")
        path.chmod(0o755)
        return path


def workload():
    from workloads.scaling import chain

    return chain(20)


def run_spec(directory: Path, run_id: str):
    from pytest_mlpbench.model.workload import RunSpec

    (directory / "artifacts").mkdir(parents=True, exist_ok=True)
    return RunSpec(workload=WORKLOAD, scale="small", run_id=run_id, artifacts=str(directory / "artifacts"),
                   events=str(directory / "events.jsonl"))


def common_env(work: Path) -> dict[str, str]:
    """What both sides get: the venv first on PATH (the hand-written commands say
    ``python``), the step environment the architectures give their steps, temporary
    files under the work directory, and no MLflow telemetry."""
    from pytest_mlpbench.architectures.base import step_environment

    (work / "tmp").mkdir(parents=True, exist_ok=True)
    env = step_environment(work / "generated" / "events.jsonl")
    env.update(PATH=os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]), TMPDIR=str(work / "tmp"),
               MLFLOW_DISABLE_TELEMETRY="true")
    return env


def copy_handwritten(framework: str, work: Path) -> Path:
    target = work / "handwritten"
    shutil.copytree(HERE / framework, target, ignore=shutil.ignore_patterns("README.md", "__pycache__"))
    return target


def metaflow_sides(work: Path) -> tuple[Side, Side]:
    from pytest_mlpbench.architectures.metaflow.local import MetaflowLocal

    env = common_env(work)
    arch = MetaflowLocal()
    arch.open(work / "generated")
    spec = run_spec(work / "generated", "generated")
    argv = arch.command(arch.flow_file(workload()), spec.to_json(), work / "generated" / "metaflow-run-id")
    generated = Side("generated", argv, arch.dir, {**env, **arch.environment()})
    mine = copy_handwritten("metaflow", work)
    hand = MetaflowLocal()
    hand.open(mine)  # the same configuration, its own home and datastore
    # the same top-level options as the generated run; `python flow.py run` alone differs only by its defaults
    argv = [sys.executable, "flow.py", "--no-pylint", "--metadata=local", "--environment=local",
            "--datastore=local", "run"]
    return generated, Side("handwritten", argv, mine, {**env, **hand.environment()})


def dvc_sides(work: Path) -> tuple[Side, Side]:
    from pytest_mlpbench.architectures.dvc import CONFIG, ENV, Dvc, Pipeline

    env = {**common_env(work), **ENV}
    arch = Dvc()
    arch.open(work / "generated")
    stage_dir = arch.project / "chain-20"
    (stage_dir / "out").mkdir(parents=True)
    (stage_dir / "spec.json").write_text(run_spec(work / "generated", "generated").to_json())
    pipeline = Pipeline(workload(), stage_dir)
    if len(pipeline.grow()) != 20:
        raise CompareError("dvc: the generated pipeline of chain-20 does not hold its 20 stages in one wave")
    pipeline.write()
    # every run reproduces every stage: forced, and never restored from the run cache
    repro = [sys.executable, "-m", "dvc", "repro", "--force", "--no-run-cache"]
    generated = Side("generated", repro + ["dvc.yaml"], stage_dir, env)
    mine = copy_handwritten("dvc", work)
    init = subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], cwd=mine, env={
        **os.environ, **env}, capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        raise CompareError(f"dvc: `dvc init --no-scm` of the hand-written project failed: {init.stderr}")
    (mine / ".dvc" / "config").write_text(CONFIG.format(site_cache=work / "handwritten-site-cache"))
    return generated, Side("handwritten", repro, mine, env)


def kubeflow_sides(work: Path) -> tuple[Side, Side]:
    env = common_env(work)
    generated = Side("generated", [sys.executable, str(HERE / "compare.py"), "run-generated", "kubeflow",
                                   "--work", str(work)], work, env)
    mine = copy_handwritten("kubeflow", work)
    return generated, Side("handwritten", [sys.executable, "pipeline.py", str(mine / "root")], mine, env)


def mlflow_sides(work: Path) -> tuple[Side, Side]:
    env = common_env(work)
    arch = open_mlflow(work)  # the tracking store's schema made now, not in a timed run
    generated = Side("generated", [sys.executable, str(HERE / "compare.py"), "run-generated", "mlflow",
                                   "--work", str(work)], work, env)
    mine = copy_handwritten("mlflow", work)
    # the driver entry point's command, started directly as the generated driver is
    return generated, Side("handwritten", [sys.executable, "main.py"], mine,
                           {**env, "MLFLOW_TRACKING_URI": arch.uri, "MLFLOW_EXPERIMENT_NAME": "handwritten-chain-20"})


def open_mlflow(work: Path):
    from pytest_mlpbench.architectures.mlflow_projects import MlflowProjects

    arch = MlflowProjects()
    arch.open(work / "generated")
    return arch


def run_generated(framework: str, work: Path) -> None:
    """One run of chain-20 on kubeflow-local or mlflow, as the harness calls the architecture."""
    from pytest_mlpbench.architectures.base import Run

    if framework == "kubeflow":
        from pytest_mlpbench.architectures.kubeflow.local import KubeflowLocal

        arch = KubeflowLocal()
        arch.open(work / "generated")
    else:
        arch = open_mlflow(work)
    run_id = f"generated-{time.time_ns()}"
    run_dir = work / "generated" / "runs" / run_id
    run_dir.mkdir(parents=True)
    arch.run(workload(), Run(spec=run_spec(work / "generated", run_id), workload=workload(), dir=run_dir,
                             timeout_s=600))


SIDES = {"metaflow": metaflow_sides, "dvc": dvc_sides, "kubeflow": kubeflow_sides, "mlflow": mlflow_sides}


def time_script(script: Path, log: Path, timeout_s: float, cpu: list[float]) -> float:
    """Seconds from the start of ``sh script`` to its exit; its output goes to ``log``.
    The user and system seconds of the processes it waited for go to ``cpu``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "ab") as out:
        started = time.monotonic()
        proc = subprocess.Popen(["sh", str(script)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        elapsed = time.monotonic() - started
    if rc != 0:
        raise CompareError(f"{script.stem} side exited {rc}; its output is in {log}:\n{tail(log)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return elapsed


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def alternate(generated, handwritten, pairs: int, warmup: int) -> list[tuple[float, float]]:
    """``warmup`` unrecorded runs of each side, then ``pairs`` pairs, generated first in each."""
    for i in range(warmup):
        print(f"warm-up {i + 1}: generated {generated():.2f} s, hand-written {handwritten():.2f} s", flush=True)
    found = []
    for i in range(pairs):
        pair = (generated(), handwritten())
        found.append(pair)
        print(f"pair {i + 1}: generated {pair[0]:.2f} s, hand-written {pair[1]:.2f} s, "
              f"ratio {pair[0] / pair[1]:.3f}", flush=True)
    return found


def summary(framework: str, found: list[tuple[float, float]]) -> dict:
    ratios = [g / h for g, h in found]
    result = {
        "framework": framework,
        "pairs": [{"generated_s": g, "handwritten_s": h, "ratio": g / h} for g, h in found],
        "generated_median_s": statistics.median(g for g, _ in found),
        "handwritten_median_s": statistics.median(h for _, h in found),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    result["within_bound"] = result["ratio_median"] <= BOUND
    return result


def add_figure(result: dict, name: str, found: dict[str, list[float]], warmup: int) -> None:
    """Medians and the median pair ratio of a second figure of each run, warm-up runs left out."""
    generated, handwritten = found["generated"][warmup:], found["handwritten"][warmup:]
    result[name] = {"generated_median_s": statistics.median(generated),
                    "handwritten_median_s": statistics.median(handwritten),
                    "ratio_median": statistics.median(g / h for g, h in zip(generated, handwritten))}


def print_summary(result: dict) -> None:
    verdict = "within 10% of the hand-written one, or faster" if result["within_bound"] else \
        "MORE than 10% slower than the hand-written one"
    print(f"\n{result['framework']}: median generated {result['generated_median_s']:.2f} s, "
          f"hand-written {result['handwritten_median_s']:.2f} s; median ratio {result['ratio_median']:.3f} "
          f"(pairs {result['ratio_min']:.3f} .. {result['ratio_max']:.3f}) over {len(result['pairs'])} pairs: "
          f"the generated pipeline is {verdict}")
    for name, what in FIGURES.items():
        if name in result:
            figure = result[name]
            print(f"{what}, medians: generated {figure['generated_median_s']:.2f} s, hand-written "
                  f"{figure['handwritten_median_s']:.2f} s; median ratio {figure['ratio_median']:.3f}")


def compare_commands(framework: str, work: Path, args) -> dict | None:
    generated, handwritten = SIDES[framework](work)
    scripts = {side.name: side.script(work) for side in (generated, handwritten)}
    for name, script in scripts.items():
        print(f"{name}: sh {script}")
    if args.setup_only:
        return None
    logs = {name: work / f"{name}.log" for name in scripts}
    cpu: dict[str, list[float]] = {name: [] for name in scripts}

    def side(name):
        return lambda: time_script(scripts[name], logs[name], args.timeout, cpu[name])

    result = summary(framework, alternate(side("generated"), side("handwritten"), args.pairs, args.warmup))
    add_figure(result, "cpu_s", cpu, args.warmup)
    return result


def compare_airflow(work: Path, args) -> dict | None:
    from pytest_mlpbench.architectures.airflow.dags import dag_id, local_dag
    from pytest_mlpbench.architectures.airflow.driver import DagDriver
    from pytest_mlpbench.architectures.airflow.server import AirflowServer
    from pytest_mlpbench.architectures.base import Run, step_environment

    server = AirflowServer(work / "airflow-home", pythonpath=step_environment(os.devnull)["PYTHONPATH"])
    print(f"starting Airflow in {server.home} ...", flush=True)
    server.start()
    try:
        driver = DagDriver(server.client, server.dags_folder, server.check_alive)
        spec = run_spec(work / "generated", "generated")
        parse = Run(spec=spec, workload=workload(), dir=work, timeout_s=None)
        generated = dag_id(workload())
        driver.ensure_dag(generated, local_dag(workload()), parse)
        driver.ensure_dag("handwritten_chain_20", (HERE / "airflow" / "handwritten_chain_20.py").read_text(), parse)
        print(f"both DAGs parsed in {server.dags_folder}; api-server {server.url}", flush=True)
        if args.setup_only:
            with contextlib.suppress(EOFError):
                input("Airflow runs until Enter is pressed ...")
            return None
        own: dict[str, list[float]] = {"generated": [], "handwritten": []}
        result = summary("airflow", alternate(
            lambda: trigger_and_wait(server, generated, args.timeout, own["generated"], spec),
            lambda: trigger_and_wait(server, "handwritten_chain_20", args.timeout, own["handwritten"]),
            args.pairs, args.warmup))
        add_figure(result, "airflow_dag_run_s", own, args.warmup)
        return result
    finally:
        server.stop()


def trigger_and_wait(server, dag: str, timeout_s: float, own: list[float], spec=None, poll_s: float = 0.1) -> float:
    """Seconds from the trigger request to the poll that sees the DAG run end;
    Airflow's own seconds from the DAG run's start date to its end date go to ``own``.
    The generated DAG reads its run spec from the conf, as the architecture sends it."""
    from pytest_mlpbench.architectures.airflow.client import timestamp_ns
    from pytest_mlpbench.architectures.airflow.dagtask import CONF_KEY
    from pytest_mlpbench.architectures.base import step_environment

    run_id = f"{dag}-{time.time_ns()}"
    conf = {}
    if spec is not None:
        spec = spec.replace(run_id=run_id)
        conf = {CONF_KEY: {"spec": vars(spec), "env": step_environment(spec.events)}}
    started = time.monotonic()
    server.client.trigger(dag, run_id, conf)
    while True:
        server.check_alive()
        dag_run = server.client.dag_run(dag, run_id)
        if dag_run["state"] in ("success", "failed"):
            break
        if time.monotonic() - started > timeout_s:
            server.client.set_dag_run_state(dag, run_id, "failed")
            raise CompareError(f"airflow: DAG run {run_id} did not end within {timeout_s:g} s")
        time.sleep(poll_s)
    elapsed = time.monotonic() - started
    if dag_run["state"] != "success":
        raise CompareError(f"airflow: DAG run {run_id} failed; see the task logs under {server.home / 'logs'}")
    own.append((timestamp_ns(dag_run["end_date"]) - timestamp_ns(dag_run["start_date"])) / 1e9)
    return elapsed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("framework", choices=FRAMEWORKS)
    p.add_argument("-n", "--pairs", type=int, default=5, help="timed pairs, generated then hand-written (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded runs of each side first (default 1)")
    p.add_argument("--work", type=Path, help="an empty or new directory for both sides (default: a new temporary one)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one run may take (default 600)")
    p.add_argument("--json", type=Path, help="also write the pairs and medians to this file")
    p.add_argument("--setup-only", action="store_true",
                   help="set both sides up and stop (Airflow: keep it running until Enter)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run-generated"]:
        if len(argv) != 4 or argv[1] not in ("kubeflow", "mlflow") or argv[2] != "--work":
            print("usage: compare.py run-generated {kubeflow,mlflow} --work DIR", file=sys.stderr)
            return 2
        run_generated(argv[1], Path(argv[3]))
        return 0
    args = parser().parse_args(argv)
    if args.pairs < 1 or args.warmup < 0:
        parser().error("--pairs must be 1 or more and --warmup 0 or more")
    work = (args.work or Path(tempfile.mkdtemp(prefix=f"mlpbench-handwritten-{args.framework}-"))).resolve()
    if work.exists() and any(work.iterdir()):
        parser().error(f"--work {work} is not empty")
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.framework}: chain-20, generated against hand-written, in {work}", flush=True)
    try:
        if args.framework == "airflow":
            result = compare_airflow(work, args)
        else:
            result = compare_commands(args.framework, work, args)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"error: a run took more than {exc.timeout:g} s (--timeout)", file=sys.stderr)
        return 1
    if result is None:
        return 0
    print_summary(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
