"""A workload as a KFP v2 pipeline: one lightweight Python component per step.

The pipeline takes two parameters, ``spec`` (the run spec) and ``env`` (the
step environment), both JSON. Each component gets its upstream steps' outputs
as JSON strings and calls :mod:`pipeline_task`. A fan-out step runs in a
``dsl.ParallelFor`` over the items its upstream step emits as a second
output; its consumers read ``dsl.Collected``. kfp.local (2.17) replaces every
task output a loop body reads with the loop item, so the item carries the
upstream outputs and a fan-out step may need only one step.

Components are built from generated source (registered with ``linecache``),
so that every step is its own component, named after the step, in the IR.

Native hand-off carries files as KFP artifacts: every component has an
``Output[Artifact]`` named ``artifacts`` whose path is the task's own
directory (the step writes into it; its metadata names the task's KEY), and
takes each needed step's as an ``Input[Artifact]`` (``in_<i>``; an
``Input[List[Artifact]]`` of ``dsl.Collected`` ones from a fan-out step),
whose paths become the task's carried directories. The local runners keep
artifacts under their pipeline root and hand a consumer that path.
"""
import keyword
import linecache
import re
import sys
from pathlib import Path
from typing import List, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Artifact, Input, Output

from pytest_mlpbench.model.dag import fanout_feeds
from pytest_mlpbench.model.workload import Workload

RUNNER = "pytest_mlpbench.step.params"
#: The output holding a fan-out's indices. kfp.local (2.17) resolves a
#: ParallelFor over a task's output only when that output is named "Output".
FANOUT_OUTPUT = "Output"
#: Native hand-off: the output artifact that is a task's own directory.
ARTIFACTS = "artifacts"


def default_image() -> str:
    return f"python:{sys.version_info.major}.{sys.version_info.minor}"


def pipeline_name(workload: Workload) -> str:
    return "mlpbench-" + re.sub(r"[^a-z0-9-]+", "-", workload.name.lower()).strip("-")


def identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return f"step_{ident}" if not ident or ident[0].isdigit() or keyword.iskeyword(ident) else ident


def component_source(workload: Workload, step, native: bool = False) -> tuple[str, str]:
    """The generated function of ``step``'s component and its name."""
    fn = identifier(step.name)
    key = fanout_feeds(workload, "kubeflow", single_need=True).get(step.name)
    returns = "str" if key is None else f"NamedTuple('Outputs', [('outputs', str), ({FANOUT_OUTPUT!r}, list)])"
    files, files_args = "", ""
    if native:
        files = "".join(f", in_{i}: Input[{'List[Artifact]' if workload.step(n).foreach else 'Artifact'}]"
                        for i, n in enumerate(step.needs)) + f", {ARTIFACTS}: Output[Artifact]"
        files_args = f", artifacts={ARTIFACTS}, inputs=[{', '.join(f'in_{i}' for i in range(len(step.needs)))}]"
    if step.foreach:
        params = ", item: str"
        call = f"run_fanout_task(spec, env, {step.name!r}, {step.needs[0]!r}, item{files_args})"
    else:
        params = "".join(f", up_{i}: {'list' if workload.step(n).foreach else 'str'}"
                         for i, n in enumerate(step.needs))
        upstream = ", ".join(f"{n!r}: up_{i}" for i, n in enumerate(step.needs))
        call = f"run_pipeline_task(spec, env, {step.name!r}, {{{upstream}}}, None, {key!r}{files_args})"
    source = (
        f"def {fn}(spec: str, env: str{params}{files}) -> {returns}:\n"
        f"    from {RUNNER} import run_fanout_task, run_pipeline_task\n"
        f"    return {call}\n"
    )
    return source, fn


def make_component(workload: Workload, step, image: str, native: bool = False):
    source, fn = component_source(workload, step, native)
    filename = f"<mlpbench-kfp {workload.name}.{step.name}{' native' if native else ''}>"
    # inspect.getsource, which KFP uses to embed the function, reads linecache
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    # the task runs the embedded source after KFP's own `from kfp.dsl import *` and `from typing import *`
    namespace: dict = {"NamedTuple": NamedTuple, "List": List, "Artifact": Artifact, "Input": Input, "Output": Output}
    exec(compile(source, filename, "exec"), namespace)
    # no pip install in the task: the image (or this venv) already has kfp and pytest-mlpbench
    return dsl.component(namespace[fn], base_image=image, packages_to_install=[], install_kfp_package=False)


def _output(task, workload: Workload, name: str, output: str | None = None):
    # named, not task.output: a native hand-off's component has its artifacts as a second output
    output = output or ("outputs" if name in fanout_feeds(workload, "kubeflow") else "Output")
    channel = task.outputs[output]
    return dsl.Collected(channel) if workload.step(name).foreach else channel


def build_pipeline(workload: Workload, image: str | None = None, native: bool = False):
    """The KFP pipeline (a ``GraphComponent``) for ``workload``; with ``native``,
    its steps hand their files on as KFP artifacts."""
    fanout_feeds(workload, "kubeflow", single_need=True)
    components = {s.name: make_component(workload, s, image or default_image(), native) for s in workload.steps}

    def body(spec: str, env: str):
        tasks: dict = {}
        for step in workload.steps:
            files = {f"in_{i}": _output(tasks[n], workload, n, ARTIFACTS)
                     for i, n in enumerate(step.needs)} if native else {}
            if step.foreach:
                with dsl.ParallelFor(tasks[step.needs[0]].outputs[FANOUT_OUTPUT]) as item:
                    task = components[step.name](spec=spec, env=env, item=item, **files)
            else:
                args = {f"up_{i}": _output(tasks[n], workload, n) for i, n in enumerate(step.needs)}
                task = components[step.name](spec=spec, env=env, **args, **files)
            task.set_caching_options(False)  # every run must run every step
            tasks[step.name] = task

    body.__name__ = identifier(pipeline_name(workload))
    return dsl.pipeline(name=pipeline_name(workload), description=f"pytest-mlpbench workload {workload.name}")(body)


def compile_pipeline(pipeline, path: Path) -> Path:
    compiler.Compiler().compile(pipeline, package_path=str(path))
    return path
