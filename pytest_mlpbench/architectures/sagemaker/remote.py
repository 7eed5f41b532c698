"""``sagemaker``: the workload as a SageMaker pipeline, upserted once per
session and executed once per run; step times come from the steps' own
events (shipped back through S3) and ListPipelineExecutionSteps."""
from __future__ import annotations

import json
import os
import re
import time

from pytest_mlpbench.architectures.base import REMOTE_POLL, Architecture, RunFailed, Unavailable, poll_until
from pytest_mlpbench.model.workload import WorkloadError
from pytest_mlpbench.options import Option
from pytest_mlpbench.step.events import append_event, read_events
from pytest_mlpbench.step.params import to_param

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
FINISHED = {"Succeeded", "Failed", "Stopped"}
STOP_WAIT_S = 60.0


ROLE = Option("sagemaker_role", "IAM role ARN the SageMaker pipeline and its jobs run as (default: "
              "$SAGEMAKER_ROLE_ARN; required for sagemaker).", str, None, "ARN")
S3_ROOT = Option("sagemaker_s3_root", "S3 prefix for the SageMaker runs' code, inputs and artifacts, "
           "e.g. s3://bucket/mlpbench (default: $SAGEMAKER_S3_ROOT; required for sagemaker).", str, None, "S3URI")
REGION = Option("sagemaker_region", "AWS region of the SageMaker pipeline (default: the standard AWS configuration: "
                "$AWS_REGION, $AWS_DEFAULT_REGION, ~/.aws/config).", str, None, "REGION")
IMAGE = Option("sagemaker_image", "Container image (ECR URI) of the SageMaker steps; it must have pytest-mlpbench "
               "and the workloads installed (required for sagemaker).", str, None, "URI")
INSTANCE_TYPE = Option("sagemaker_instance_type", "Instance type of the SageMaker steps (default: ml.m5.large).",
                       str, "ml.m5.large", "TYPE")


def resolve_settings(options) -> dict:
    """Role, S3 root and region from the options or the standard AWS
    configuration, and the task image; raise :class:`Unavailable` naming all
    that is missing."""
    import boto3

    session = boto3.Session(region_name=options.get("sagemaker_region") or None)
    role = options.get("sagemaker_role") or os.environ.get("SAGEMAKER_ROLE_ARN")
    s3_root = options.get("sagemaker_s3_root") or os.environ.get("SAGEMAKER_S3_ROOT")
    missing = []
    if session.get_credentials() is None:
        missing.append("AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws)")
    if not session.region_name:
        missing.append("a region (--mlpbench-sagemaker-region, AWS_REGION or ~/.aws/config)")
    if not role:
        missing.append("an execution role (--mlpbench-sagemaker-role=ARN or SAGEMAKER_ROLE_ARN)")
    elif not ROLE_ARN.match(role):
        missing.append(f"a valid role ARN (got {role!r})")
    if not s3_root:
        missing.append("an S3 root (--mlpbench-sagemaker-s3-root=s3://BUCKET/PREFIX or SAGEMAKER_S3_ROOT)")
    elif not s3_root.startswith("s3://"):
        missing.append(f"an s3:// URI as S3 root (got {s3_root!r})")
    if not options.get("sagemaker_image"):
        missing.append("a task image (--mlpbench-sagemaker-image=URI with pytest-mlpbench and the workloads)")
    if missing:
        raise Unavailable("sagemaker: AWS is not configured; missing " + "; ".join(missing))
    return {"boto_session": session, "role": role, "s3_root": s3_root.rstrip("/")}


class SageMaker(Architecture):
    name = "sagemaker"
    shared_is_native = True  # channels carry each step's files to the later steps' containers
    options = (ROLE, S3_ROOT, REGION, IMAGE, INSTANCE_TYPE, REMOTE_POLL)

    def check(self):
        self._settings = resolve_settings(self.settings)

    def open(self, session_dir):
        from sagemaker.core.workflow.pipeline_context import PipelineSession

        boto_session = self._settings["boto_session"]
        self.client = boto_session.client("sagemaker")
        self.s3 = boto_session.client("s3")
        self.session = PipelineSession(boto_session=boto_session, sagemaker_client=self.client,
                                       default_bucket=self._settings["s3_root"][5:].split("/")[0])
        self._upserted: dict = {}

    def versions(self):
        from importlib.metadata import version

        return {"sagemaker": version("sagemaker"), "sagemaker-core": version("sagemaker-core")}

    def pipeline(self, workload):
        """Build and create-or-update the workload's pipeline, once per session."""
        if workload.name not in self._upserted:
            from pytest_mlpbench.architectures.sagemaker.pipeline import PipelineSettings, build_pipeline

            timeout = self.settings.get("timeout")
            settings = PipelineSettings(role=self._settings["role"], s3_root=self._settings["s3_root"],
                                image=self.settings.sagemaker_image,
                                instance_type=self.settings.get("sagemaker_instance_type") or "ml.m5.large",
                                max_runtime_s=int(timeout) + 1 if timeout else None)
            pipeline = build_pipeline(workload, settings, self.session)
            pipeline.upsert(role_arn=self._settings["role"], description=f"pytest-mlpbench {workload.name}")
            self._upserted[workload.name] = pipeline
        return self._upserted[workload.name]

    def run(self, workload, run):
        from botocore.exceptions import BotoCoreError, ClientError
        from sagemaker.core.helper.iam_role_resolver import RoleValidationError

        try:
            pipeline = self.pipeline(workload)
        except (BotoCoreError, ClientError, RoleValidationError, WorkloadError, ValueError) as exc:
            raise RunFailed(f"sagemaker: cannot create or update the pipeline: {exc}") from exc
        try:
            self._run(pipeline, run)
        except (BotoCoreError, ClientError) as exc:
            raise RunFailed(f"sagemaker: {exc}") from exc

    def _run(self, pipeline, run):
        spec = {**run.spec.__dict__, "artifacts": "", "events": ""}  # set by each task in its container
        env = {"TRACEPARENT": run.spec.traceparent} if run.spec.traceparent else {}
        arn = self.start(pipeline.name, run.spec.run_id, spec, env)
        status = self.wait(arn, run)
        self.collect(arn, run)
        if status != "Succeeded":
            raise RunFailed(f"SageMaker execution {arn} ended {status}: {self.failure_reason(arn)}")
        if not read_events(run.spec.events, run.spec.run_id):
            raise RunFailed(f"SageMaker execution {arn} reported success, but no step sent its events back "
                            f"(under {self._settings['s3_root']}/runs/{run.spec.run_id}/steps/): nothing to measure")

    def start(self, pipeline_name: str, run_id: str, spec: dict, env: dict) -> str:
        response = self.client.start_pipeline_execution(
            PipelineName=pipeline_name, PipelineExecutionDisplayName=run_id[:82],
            PipelineParameters=[{"Name": "RunId", "Value": run_id}, {"Name": "Spec", "Value": to_param(spec)},
                                {"Name": "Env", "Value": to_param(env)}])
        return response["PipelineExecutionArn"]

    def wait(self, arn: str, run) -> str:
        """Poll until the execution ends; stop it at the run's deadline."""
        def finished():
            status = self.client.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"]
            return status if status in FINISHED else None

        return poll_until(finished, run, self.settings.get("remote_poll") or 2.0,
                          stop=lambda: self.stop(arn), what=f"stopped {arn}")

    def stop(self, arn: str) -> None:
        self.client.stop_pipeline_execution(PipelineExecutionArn=arn)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            if self.client.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] in FINISHED:
                return
            time.sleep(2.0)

    def execution_steps(self, arn: str) -> list[dict]:
        steps, token = [], None
        while True:
            page = self.client.list_pipeline_execution_steps(
                PipelineExecutionArn=arn, **({"NextToken": token} if token else {}))
            steps += page.get("PipelineExecutionSteps", [])
            token = page.get("NextToken")
            if not token:
                return steps

    def collect(self, arn: str, run) -> None:
        """Framework times per task into the run, and the tasks' events from S3."""
        for info in self.execution_steps(arn):
            step, index = task_of(info, run.workload)
            if step is None:
                continue
            run.add_task_info(step, index, started_ns=_ns(info.get("StartTime")), finished_ns=_ns(info.get("EndTime")),
                              sagemaker_status=info.get("StepStatus"),
                              job_arn=(info.get("Metadata", {}).get("ProcessingJob") or {}).get("Arn"))
        for event in self.events(run.spec.run_id):
            append_event(run.spec.events, event)

    def events(self, run_id: str) -> list[dict]:
        bucket, _, prefix = self._settings["s3_root"][5:].partition("/")
        prefix = f"{prefix}/runs/{run_id}/steps/".lstrip("/")
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("events.jsonl"):
                    text = self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
                    found += [json.loads(line) for line in text.splitlines() if line.strip()]
        return [e for e in found if e.get("run_id") == run_id]

    def failure_reason(self, arn: str) -> str:
        reasons = [f"{s.get('StepName')}: {s.get('FailureReason')}" for s in self.execution_steps(arn)
                   if s.get("FailureReason")]
        return "; ".join(reasons) or "no failure reason given"


def task_of(info: dict, workload) -> tuple[str | None, int | None]:
    """The (step, index) of a ListPipelineExecutionSteps entry: steps are
    named by ``step_id`` with the workload step as display name; ForEach
    children are ``<body>-<n>``."""
    from pytest_mlpbench.architectures.sagemaker.pipeline import step_id

    names = {step_id(s.name): s.name for s in workload.steps}
    name = info.get("StepName", "")
    if name in names:
        return names[name], None
    body, _, number = name.rpartition("-")
    if number.isdigit() and body in names and workload.step(names[body]).foreach:
        return names[body], int(number)
    return None, None


def _ns(value) -> int | None:
    return None if value is None else int(value.timestamp() * 1e9)
