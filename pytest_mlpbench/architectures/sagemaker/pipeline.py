"""A workload as a SageMaker pipeline (SDK v3): one ProcessingStep per step,
running ``python3 -m pytest_mlpbench.step`` in the
image named by option; a fan-out step is the body of a ForEachStep over the
items its upstream step writes to a property file.

Everything of a run lives under ``S3ROOT/runs/<RunId>/``: ``steps/<step>/``
holds a step's outputs and events (``<index>/`` per fan-out task) and
``artifacts/<step>/`` its artifact files, which every later step mounts at the
same path, so artifact paths in outputs stay valid from step to step.
"""
from __future__ import annotations

from dataclasses import dataclass

from sagemaker.core.processing import Processor
from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
from sagemaker.core.workflow.functions import Join, JsonGet
from sagemaker.core.workflow.parameters import ParameterString
from sagemaker.core.workflow.properties import PropertyFile
from sagemaker.mlops.workflow.for_each_step import CurrentItem, ForEachStep
from sagemaker.mlops.workflow.pipeline import Pipeline
from sagemaker.mlops.workflow.steps import ProcessingStep

from pytest_mlpbench.architectures.kubeflow.pipeline import pipeline_name
from pytest_mlpbench.model.dag import fanout_feeds
from pytest_mlpbench.model.workload import Workload

PROCESSING = "/opt/ml/processing"
OUTPUT = f"{PROCESSING}/output"
TASK_MODULE = "pytest_mlpbench.step"
FANOUT_FILE = "fanout.json"  # {"items": "[0, 1, ...]"}: ForEach takes a JSON list string
MAX_CONCURRENCY = 10


@dataclass(frozen=True)
class PipelineSettings:
    role: str
    s3_root: str  # s3://bucket/prefix
    image: str
    instance_type: str = "ml.m5.large"
    max_runtime_s: int | None = None


def step_id(name: str) -> str:
    """SageMaker step names: letters, digits and hyphens; a ForEach child is
    ``<body>-<n>``, so no top-level step may end in ``-<digits>``."""
    cleaned = "".join(c if c.isalnum() else "-" for c in name).strip("-") or "step"
    return cleaned + "-step" if cleaned.rsplit("-", 1)[-1].isdigit() else cleaned


def ancestors(workload: Workload, name: str) -> list[str]:
    seen: list[str] = []
    todo = list(workload.step(name).needs)
    while todo:
        need = todo.pop()
        if need not in seen:
            seen.append(need)
            todo.extend(workload.step(need).needs)
    return [s.name for s in workload.steps if s.name in seen]


class Builder:
    def __init__(self, workload: Workload, settings: PipelineSettings, session):
        self.feeds = fanout_feeds(workload, "sagemaker", single_need=True)
        self.workload, self.settings, self.session = workload, settings, session
        self.run_id = ParameterString("RunId")
        self.spec = ParameterString("Spec")
        self.env = ParameterString("Env")
        self.fanout_files: dict[str, PropertyFile] = {}

    def s3(self, *parts) -> Join:
        return Join(on="/", values=[self.settings.s3_root.rstrip("/"), "runs", self.run_id, *parts])

    def processor(self) -> Processor:
        return Processor(
            role=self.settings.role, image_uri=self.settings.image, instance_count=1,
            instance_type=self.settings.instance_type, entrypoint=["python3", "-m", TASK_MODULE],
            max_runtime_in_seconds=self.settings.max_runtime_s, sagemaker_session=self.session,
            base_job_name="mlpbench")

    def inputs(self, name: str) -> list[ProcessingInput]:
        step = self.workload.step(name)
        found = [self._input(f"steps-{need}", self.s3("steps", need), f"{PROCESSING}/input/steps/{need}")
                 for need in step.needs]
        found += [self._input(f"artifacts-{up}", self.s3("artifacts", up), f"{PROCESSING}/artifacts/{up}")
                  for up in ancestors(self.workload, name)]
        return found

    @staticmethod
    def _input(input_name, uri, path) -> ProcessingInput:
        return ProcessingInput(input_name=input_name[:64], s3_input=ProcessingS3Input(
            s3_uri=uri, local_path=path, s3_data_type="S3Prefix", s3_input_mode="File"))

    def outputs(self, name: str) -> list[ProcessingOutput]:
        return [
            ProcessingOutput(output_name="result", s3_output=ProcessingS3Output(
                s3_uri=self.s3("steps", name), local_path=OUTPUT, s3_upload_mode="EndOfJob")),
            ProcessingOutput(output_name="artifacts", s3_output=ProcessingS3Output(
                s3_uri=self.s3("artifacts", name), local_path=f"{PROCESSING}/artifacts/{name}",
                s3_upload_mode="EndOfJob")),
        ]

    def step(self, name: str, depends_on: list) -> ProcessingStep:
        step = self.workload.step(name)
        args = ["--step", name, "--spec", self.spec, "--env", self.env, "--out-dir", OUTPUT,
                "--artifacts", f"{PROCESSING}/artifacts/{name}",
                *(f"--upstream={need}={PROCESSING}/input/steps/{need}" for need in step.needs)]
        if step.foreach:
            args += ["--index", CurrentItem()]
        property_files = []
        if name in self.feeds:
            args += ["--fanout-key", self.feeds[name]]
            self.fanout_files[name] = PropertyFile(name=f"{step_id(name)}-fanout", output_name="result",
                                                   path=FANOUT_FILE)
            property_files.append(self.fanout_files[name])
        step_args = self.processor().run(inputs=self.inputs(name), outputs=self.outputs(name), arguments=args)
        return ProcessingStep(name=step_id(name), step_args=step_args, depends_on=depends_on,
                              property_files=property_files, display_name=name)

    def build(self) -> Pipeline:
        built: dict = {}
        for step in self.workload.steps:
            depends_on = [built[n] for n in step.needs]
            if step.foreach:
                need = step.needs[0]
                items = JsonGet(step_name=built[need].name, property_file=self.fanout_files[need],
                                json_path="items")
                built[step.name] = ForEachStep(
                    name=f"{step_id(step.name)}-foreach", iterable_items=items, max_concurrency=MAX_CONCURRENCY,
                    for_each_body=[self.step(step.name, [])], depends_on=depends_on)
            else:
                built[step.name] = self.step(step.name, depends_on)
        return Pipeline(name=pipeline_name(self.workload), parameters=[self.run_id, self.spec, self.env],
                        pipeline_experiment_config=None,
                        steps=list(built.values()), sagemaker_session=self.session)


def build_pipeline(workload: Workload, settings: PipelineSettings, session) -> Pipeline:
    return Builder(workload, settings, session).build()
