"""One workload run on the session's Prefect, through its REST API: deploy the
workload's flow (once per session), create a flow run from the deployment, wait
for it, and record each task run's state timestamps."""
from __future__ import annotations

import re
import time

from pytest_mlpbench.architectures.base import Run, RunFailed, poll_until
from pytest_mlpbench.architectures.prefect.client import PrefectError, timestamp_ns
from pytest_mlpbench.architectures.prefect.flows import DEPLOYMENT, deploy_script, flow_name, flow_source
from pytest_mlpbench.architectures.prefect.server import POOL, PrefectServer
from pytest_mlpbench.architectures.subprocesses import step_error
from pytest_mlpbench.step.events import read_events

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
TASK_NAME = re.compile(r"^(?P<step>.+)\[(?P<index>None|\d+)\]$")
#: How long the server's task-run recorder may take to store the task runs' last
#: states after the flow run ended (they travel as events, apart from the flow run's);
#: after a failed flow run, shorter: a task whose process was killed stays Running.
RECORDED_WAIT_S = 10.0
RECORDED_WAIT_FAILED_S = 2.0


def recorded_wait_s(flow_state: str) -> float:
    return RECORDED_WAIT_S if flow_state == "COMPLETED" else RECORDED_WAIT_FAILED_S if flow_state in FINAL else 0


class FlowRunner:
    def __init__(self, server: PrefectServer, poll_s: float = 0.1):
        self.server = server
        self.poll_s = poll_s
        self._deployments: dict[str, str] = {}  # flow name -> deployment id
        self.messages: dict[tuple, str] = {}  # (step, index) -> the state message of a failed task run

    def deployment(self, workload, run: Run) -> str:
        """The id of the workload's deployment, made the first time (``flow.from_source(...).deploy``)."""
        name = flow_name(workload)
        if name not in self._deployments:
            flows = self.server.home / "flows"
            flows.mkdir(exist_ok=True)
            filename = name.replace("-", "_").replace(".", "_") + ".py"
            (flows / filename).write_text(flow_source(workload, run.env.get("PYTHONPATH", "")))
            script = flows / f"deploy_{filename}"
            script.write_text(deploy_script(str(flows), filename, POOL))
            try:
                self.server.call([str(script)], f"deploy-{name}", cwd=flows, timeout_s=run.remaining_s())
            except PrefectError as exc:
                raise RunFailed(f"Prefect could not deploy the generated flow {filename}: {exc}") from None
            self._deployments[name] = self.server.client.deployment(name, DEPLOYMENT)["id"]
        return self._deployments[name]

    def run(self, workload, run: Run) -> None:
        deployment = self.deployment(workload, run)
        self.messages.clear()
        parameters = {"run": {"spec": run.spec.to_json(), "env": run.env}}
        flow_run = self.server.client.create_flow_run(deployment, run.spec.run_id, parameters)
        ident = flow_run["id"]
        try:
            flow_run = self._wait(ident, run)
        finally:
            self.record_tasks(ident, run, wait_s=recorded_wait_s(flow_run["state"]["type"]))
        if flow_run["state"]["type"] != "COMPLETED":
            raise RunFailed(self.failure(flow_run, run))

    def _wait(self, ident: str, run: Run) -> dict:
        seen: dict = {"state": {"type": "SCHEDULED"}}

        def finished():
            self.server.check_alive()
            try:
                seen.update(self.server.client.flow_run(ident))
            except PrefectError as exc:
                if exc.status is not None:
                    raise
            return dict(seen) if seen["state"]["type"] in FINAL else None

        return poll_until(finished, run, self.poll_s, stop=lambda: self.cancel(ident),
                          what=lambda: f"the flow run was {seen['state']['type']} and is cancelled")

    def cancel(self, ident: str) -> None:
        """End the flow run's processes (its steps included) and mark it cancelled."""
        self.server.stop_flow_runs()
        try:
            self.server.client.set_flow_run_state(ident, "CANCELLED", "stopped by pytest-mlpbench")
        except PrefectError:
            pass

    def record_tasks(self, ident: str, run: Run, wait_s: float = 0.0) -> None:
        """Per task run, from its state history: ``created_ns`` (Pending: submitted to the task
        runner), ``queued_ns`` (ready: Pending, or the end of its last upstream task if later),
        ``started_ns`` (Running) and ``finished_ns`` (its final state)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                tasks = self.server.client.task_runs(ident)
            except PrefectError:
                return
            # A task whose upstream failed stays Pending, named NotReady.
            if all(t["state_type"] in FINAL or t.get("state_name") == "NotReady" for t in tasks) \
                    or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        found = {}
        for task in tasks:
            match = TASK_NAME.match(task["name"])
            if match:
                index = None if match["index"] == "None" else int(match["index"])
                found[match["step"], index] = (task, self._first_states(task["id"]))
        ended: dict[str, int] = {}
        for (step, _), (_, first) in found.items():
            ended[step] = max(ended.get(step, 0), first.get("final") or 0)
        for (step, index), (task, first) in found.items():
            needs = next((s.needs for s in run.workload.steps if s.name == step), ())
            ready = max([first.get("PENDING") or 0, *(ended.get(need, 0) for need in needs)])
            run.add_task_info(step, index, created_ns=first.get("PENDING"), queued_ns=ready or None,
                              started_ns=first.get("RUNNING"), finished_ns=first.get("final"),
                              prefect_state=task["state_type"])
            if task["state_type"] in ("FAILED", "CRASHED"):
                self.messages[step, index] = (task.get("state") or {}).get("message") or ""

    def _first_states(self, task_run_id: str) -> dict[str, int | None]:
        """The first timestamp of each state type of a task run, and of its final state as ``final``."""
        try:
            states = self.server.client.task_run_states(task_run_id)
        except PrefectError:
            states = []
        first: dict[str, int | None] = {}
        for state in sorted(states, key=lambda s: s["timestamp"]):
            first.setdefault(state["type"], timestamp_ns(state["timestamp"]))
        first["final"] = next((first[t] for t in FINAL if t in first), None)
        return first

    def failure(self, flow_run: dict, run: Run) -> str:
        """The failed task's step error (its own event), else Prefect's message for that task or the flow run."""
        state = flow_run["state"]
        message = f"Prefect flow run {flow_run.get('name')} ended {state['type']}"
        failed = [(step, index) for (step, index), info in run.task_info.items()
                  if info.get("prefect_state") in ("FAILED", "CRASHED")]
        for step, index in failed:
            error = step_error(run, step, index) or self.messages.get((step, index))
            if error:
                return f"{message}: task {task_name(step, index)} failed: {error}"
        said = state.get("message") or "no message"
        # Prefect's Running tasks, else (their Running state may have died with the process) the
        # steps whose upstream passed that recorded no event.
        running = [task_name(step, index) for (step, index), info in run.task_info.items()
                   if info.get("prefect_state") == "RUNNING"] or unfinished_steps(run)
        if running and "BrokenProcessPool" in said:  # the task's process died without a word
            return (f"{message}: task {', '.join(running)} was running in a task-runner process that was terminated "
                    f"abruptly (Python's process pool does not say by which signal). Prefect: {said}")
        return f"{message}: {said}"


def unfinished_steps(run: Run) -> list[str]:
    events = read_events(run.spec.events, run.spec.run_id)
    passed = {e["step"] for e in events if e.get("outcome") == "passed"}
    return [s.name for s in run.workload.steps
            if s.name not in {e["step"] for e in events} and all(need in passed for need in s.needs)]


def task_name(step: str, index: int | None) -> str:
    return step + ("" if index is None else f"[{index}]")
