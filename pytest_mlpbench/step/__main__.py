"""``python -m pytest_mlpbench.step``: one task of a workload step, in a process of its own.

    python -m pytest_mlpbench.step --spec SPEC --step NAME [--index I]
        [--upstream NEED=PATH ... | --upstream-json JSON]
        (--outputs FILE | --out-dir DIR) [--env JSON] [--artifacts DIR] [--events FILE]
        [--fanout-key KEY] [--with-events] [--carried TASK=DIR ...]
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from pytest_mlpbench.model.workload import RunSpec, Workload, load_workload
from pytest_mlpbench.step import apply_environment, read_outputs, run_step, task_spec, write_json_atomic
from pytest_mlpbench.step.events import EVENTS_ENV, read_events


def parser():
    import argparse

    p = argparse.ArgumentParser(prog="python -m pytest_mlpbench.step", description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="the run spec: a JSON file, or the JSON itself")
    p.add_argument("--step", required=True)
    p.add_argument("--index", type=int, help="the task of a fan-out step")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--upstream", action="append", default=[], metavar="NEED=PATH",
                       help="outputs of a needed step: a JSON file, or a directory with outputs.json (for a "
                            "fan-out step, numbered folders of them); or the file repeated in task order")
    given.add_argument("--upstream-json", metavar="JSON|FILE",
                       help="the needed steps' outputs as one JSON object (need -> outputs), or a file of it")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--outputs", help="where to write the outputs JSON")
    out.add_argument("--out-dir", help="write outputs.json, events.jsonl and fanout.json here (in a folder "
                                       "named by --index for a fan-out task)")
    p.add_argument("--env", help="JSON object of the step environment to set first (variables, PYTHONPATH)")
    p.add_argument("--artifacts", help="the run's artifact directory as this task sees it")
    p.add_argument("--events", help="the event sink as this task sees it")
    p.add_argument("--carried", action="append", default=[], metavar="TASK=DIR",
                   help="native hand-off: where the files of producing task TASK (step, or step.index) were carried")
    p.add_argument("--fanout-key", help="also write fanout.json: the task indices of the fan-out over this key")
    p.add_argument("--with-events", action="store_true",
                   help='write {"outputs": ..., "events": [...]} and echo the events (for pods: they travel '
                        "with the outputs)")
    return p


VALUED = ("spec", "step", "index", "upstream_json", "outputs", "out_dir", "env", "artifacts", "events", "fanout_key")
REPEATED = ("upstream", "carried")
FLAGS = ("with_events",)


def parse_args(argv: list[str]) -> SimpleNamespace:
    """The arguments as :func:`parser` reads them. The forms the architectures write
    (``--name VALUE``, ``--name=VALUE``) are read here, because building the argparse
    parser (and the ``shutil`` it imports) costs every task some 8 ms; anything else
    (``--help``, a mistake) goes to argparse, which reads it or says what is wrong."""
    return _parse_plain(argv) or parser().parse_args(argv)


def _parse_plain(argv: list[str]) -> SimpleNamespace | None:
    args = {**dict.fromkeys(VALUED), **{name: [] for name in REPEATED}, **dict.fromkeys(FLAGS, False)}
    tokens = iter(argv)
    for token in tokens:
        flag, eq, value = token.partition("=")
        name = flag[2:].replace("-", "_")
        if not flag.startswith("--") or name not in args:
            return None
        if name in FLAGS:
            if eq:
                return None
            args[name] = True
            continue
        if not eq:
            value = next(tokens, None)
            if value is None or value.startswith("-"):
                return None
        if name in REPEATED:
            args[name].append(value)
        elif args[name] is None:
            args[name] = value
        else:
            return None
    if (args["spec"] is None or args["step"] is None or (args["outputs"] is None) == (args["out_dir"] is None)
            or (args["upstream"] and args["upstream_json"] is not None)):
        return None
    if args["index"] is not None:
        if not args["index"].isdigit():
            return None
        args["index"] = int(args["index"])
    return SimpleNamespace(**args)


def read_json(text: str):
    """JSON given inline, or the path of a file of it."""
    return json.loads(text if text.lstrip().startswith(("{", "[")) else Path(text).read_text())


def read_upstream(workload: Workload, step_name: str, items: list[str]) -> dict:
    """The outputs of the steps ``step_name`` needs, from ``NEED=PATH`` items
    (a fan-out step given no file ran no task)."""
    paths: dict[str, list[Path]] = {}
    for item in items:
        need, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--upstream {item!r}: expected NEED=PATH")
        paths.setdefault(need, []).append(Path(path))
    return {need: read_outputs(paths.get(need, []), workload.step(need).foreach)
            for need in workload.step(step_name).needs if need in paths or workload.step(need).foreach}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.env:
        apply_environment(json.loads(args.env))
    spec = RunSpec(**read_json(args.spec))
    out_dir = None
    if args.out_dir:
        out_dir = Path(args.out_dir) / ("" if args.index is None else str(args.index))
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.artifacts:
        spec.artifacts = args.artifacts
    else:
        spec = task_spec(spec, args.step, args.index)
    spec.events = args.events or (str(out_dir / "events.jsonl") if out_dir else spec.events)
    os.environ[EVENTS_ENV] = spec.events
    Path(spec.artifacts).mkdir(parents=True, exist_ok=True)
    workload = load_workload(spec.workload)
    try:
        outputs = run(args, spec, workload)
    finally:
        if args.with_events:
            for event in read_events(spec.events, spec.run_id):
                print("mlpbench event:", json.dumps(event), flush=True)  # kept in the log if the step fails
    result = {"outputs": outputs, "events": read_events(spec.events, spec.run_id)} if args.with_events else outputs
    target = Path(args.outputs) if args.outputs else out_dir / "outputs.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target, result)
    if args.fanout_key:
        write_fanout(target.parent / "fanout.json", args.step, outputs, args.fanout_key)
    return 0


def run(args, spec: RunSpec, workload: Workload) -> dict:
    upstream = read_json(args.upstream_json) if args.upstream_json else read_upstream(workload, args.step, args.upstream)
    carried = dict(item.partition("=")[::2] for item in args.carried)
    return run_step(spec, args.step, upstream, args.index, workload, carried)


def write_fanout(path: Path, step_name: str, outputs: dict, key: str) -> None:
    """The task indices of the fan-out over ``outputs[key]``, as a JSON string
    under ``items`` (what SageMaker's ForEach iterates)."""
    shards = outputs.get(key)
    if not isinstance(shards, list):
        raise ValueError(f"step {step_name!r} feeds a fan-out over {key!r}, but returned "
                         f"{type(shards).__name__} there, not a list")
    path.write_text(json.dumps({"items": json.dumps(list(range(len(shards))))}))


if __name__ == "__main__":
    sys.exit(main())
