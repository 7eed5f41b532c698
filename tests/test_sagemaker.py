"""sagemaker without the cloud: the pipeline definition JSON, the skip reasons,
and the control-plane calls against moto's AWS emulator on 127.0.0.1.

Moto reports every execution succeeded at once and runs nothing, so these
tests check calls only; no run here produces a benchmark figure.
"""
import json
import os
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fakes import FANOUT, LINEAR
from pytest_mlpbench.architectures import RunFailed, Unavailable
from pytest_mlpbench.architectures.base import Run
from pytest_mlpbench.architectures.sagemaker.remote import SageMaker, resolve_settings, task_of
from pytest_mlpbench.model.workload import RunSpec
from pytest_mlpbench.options import Settings
from pytest_mlpbench.step.events import read_events

ROLE = "arn:aws:iam::123456789012:role/mlpbench"
REPO = Path(__file__).parents[1]
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "SAGEMAKER_ROLE_ARN", "SAGEMAKER_S3_ROOT",
            "KF_PIPELINES_ENDPOINT")


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    """No AWS configuration at all, whatever this machine has."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def fake_aws(no_aws, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def moto(fake_aws, monkeypatch):
    """moto's server on a free port of 127.0.0.1; boto3 pointed at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # moto answers 500 to what it lacks: no retries
    # the SDK checks the role with iam:SimulatePrincipalPolicy, which moto lacks
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
        boto3.client("iam").create_role(RoleName="mlpbench", AssumeRolePolicyDocument=json.dumps(trust))
        yield boto3
    finally:
        server.stop()


def options(**extra) -> Settings:
    return Settings({"sagemaker_role": ROLE, "sagemaker_s3_root": "s3://bench/mlpbench", "sagemaker_image":
                     "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlpbench:1", "remote_poll": 0.05, **extra})


def definition(workload) -> dict:
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from pytest_mlpbench.architectures.sagemaker.pipeline import PipelineSettings as Build, build_pipeline

    import boto3

    session = PipelineSession(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="bench")
    build = Build(role=ROLE, s3_root="s3://bench/mlpbench", image="img:1")
    return json.loads(build_pipeline(workload, build, session).definition())


def new_run(tmp_path, workload) -> Run:
    run_dir = tmp_path / "run"
    (run_dir / "artifacts").mkdir(parents=True)
    spec = RunSpec(workload=workload.ref, scale="smoke", run_id=f"sagemaker-{workload.name}-1",
                   artifacts=str(run_dir / "artifacts"), events=str(run_dir / "events.jsonl"))
    return Run(spec=spec, workload=workload, dir=run_dir, timeout_s=60)


def test_definition_has_the_steps_dependencies_and_parameters(fake_aws):
    spec = definition(LINEAR)
    assert [p["Name"] for p in spec["Parameters"]] == ["RunId", "Spec", "Env"]
    steps = {s["Name"]: s for s in spec["Steps"]}
    assert list(steps) == ["begin", "middle", "end"]
    assert "DependsOn" not in steps["begin"]
    assert steps["middle"]["DependsOn"] == ["begin"]
    assert steps["end"]["DependsOn"] == ["middle", "begin"]
    app = steps["end"]["Arguments"]["AppSpecification"]
    assert app["ContainerEntrypoint"] == ["python3", "-m", "pytest_mlpbench.step"]
    assert app["ContainerArguments"][:2] == ["--step", "end"]
    mounted = [i["S3Input"]["LocalPath"] for i in steps["end"]["Arguments"]["ProcessingInputs"]]
    assert mounted == ["/opt/ml/processing/input/steps/middle", "/opt/ml/processing/input/steps/begin",
                       "/opt/ml/processing/artifacts/begin", "/opt/ml/processing/artifacts/middle"]


def test_definition_fans_out_with_for_each(fake_aws):
    steps = {s["Name"]: s for s in definition(FANOUT)["Steps"]}
    assert list(steps) == ["begin", "shard-foreach", "gather"]
    assert steps["begin"]["PropertyFiles"] == [
        {"PropertyFileName": "begin-fanout", "OutputName": "result", "FilePath": "fanout.json"}]
    loop = steps["shard-foreach"]
    assert loop["Type"] == "ForEach" and loop["DependsOn"] == ["begin"]
    assert loop["Arguments"]["IterableItems"] == {"Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.begin.PropertyFiles.begin-fanout"}, "Path": "items"}}
    (body,) = loop["Arguments"]["ForEachBody"]
    assert body["Name"] == "shard"
    assert body["Arguments"]["AppSpecification"]["ContainerArguments"][-2:] == [
        "--index", {"Get": "ForEach.CurrentItem"}]
    assert steps["gather"]["DependsOn"] == ["shard-foreach"]


def test_check_names_everything_missing(no_aws):
    with pytest.raises(Unavailable) as info:
        resolve_settings(Settings({}))
    message = str(info.value)
    for what in ("AWS credentials", "a region", "--mlpbench-sagemaker-role", "--mlpbench-sagemaker-s3-root",
                 "--mlpbench-sagemaker-image"):
        assert what in message


def test_check_rejects_malformed_role_and_root(fake_aws):
    with pytest.raises(Unavailable, match="valid role ARN.*s3:// URI"):
        resolve_settings(Settings({"sagemaker_role": "admin", "sagemaker_s3_root": "bench/x"}))
    assert resolve_settings(options())["s3_root"] == "s3://bench/mlpbench"


def test_control_plane_calls_against_moto(moto, tmp_path):
    arch = SageMaker(options())
    arch.check()
    arch.open(tmp_path)
    run = new_run(tmp_path, FANOUT)
    pipeline = arch.pipeline(FANOUT)  # created
    client = moto.client("sagemaker")
    stored = json.loads(client.describe_pipeline(PipelineName=pipeline.name)["PipelineDefinition"])
    assert [s["Name"] for s in stored["Steps"]] == ["begin", "shard-foreach", "gather"]
    again = SageMaker(options(sagemaker_instance_type="ml.c5.xlarge"))
    again.check()
    again.open(tmp_path)
    again.pipeline(FANOUT)  # updated, not created twice
    assert len(client.list_pipelines()["PipelineSummaries"]) == 1
    stored = json.loads(client.describe_pipeline(PipelineName=pipeline.name)["PipelineDefinition"])
    assert stored["Steps"][0]["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.c5.xlarge"

    arn = arch.start(pipeline.name, run.spec.run_id, {"run_id": run.spec.run_id}, {})
    params = client.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in params}["RunId"] == run.spec.run_id
    assert arch.wait(arn, run) == "Succeeded"


def test_a_run_that_sends_no_events_back_is_a_failure_not_a_figure(moto, tmp_path):
    arch = SageMaker(options())
    arch.check()
    arch.open(tmp_path)
    run = new_run(tmp_path, LINEAR)
    started = time.monotonic()
    with pytest.raises(RunFailed, match="sagemaker: .*ListPipelineExecutionSteps|no step sent its events"):
        arch.run(LINEAR, run)  # moto "succeeds" at once and runs nothing
    assert time.monotonic() - started < 30
    assert read_events(run.spec.events) == []


def test_events_come_back_from_s3(moto, tmp_path):
    arch = SageMaker(options())
    arch.check()
    arch.open(tmp_path)
    event = {"run_id": "r1", "step": "begin", "index": None, "start_ns": 1, "end_ns": 2}
    s3 = moto.client("s3")
    s3.put_object(Bucket="bench", Key="mlpbench/runs/r1/steps/begin/events.jsonl", Body=json.dumps(event) + "\n")
    s3.put_object(Bucket="bench", Key="mlpbench/runs/r1/steps/begin/outputs.json", Body="{}")
    s3.put_object(Bucket="bench", Key="mlpbench/runs/r2/steps/begin/events.jsonl", Body=json.dumps(event) + "\n")
    assert arch.events("r1") == [event]


def test_execution_steps_map_to_tasks():
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for name, expected in [("begin", ("begin", None)), ("shard-2", ("shard", 2)), ("shard-foreach", (None, None)),
                           ("gather", ("gather", None)), ("begin-1", (None, None))]:
        assert task_of({"StepName": name, "StartTime": at}, FANOUT) == expected


def test_benchmarks_skip_sagemaker_and_kubeflow_with_reasons(pytester, no_aws, monkeypatch):
    monkeypatch.chdir(REPO)
    result = pytester.runpytest_subprocess(
        str(REPO / "benchmarks"), "--mlpbench-arch=sagemaker,kubeflow", "-p", "no:cacheprovider", "-rs",
        f"--mlpbench-results={pytester.path / 'results'}")
    assert result.ret == 0
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0
    assert outcomes["skipped"] >= 2  # training on each; other suites may add more
    result.stdout.fnmatch_lines_random([
        "*sagemaker: AWS is not configured; missing AWS credentials*",
        "*kubeflow: no KFP endpoint configured; set --mlpbench-kubeflow-host=URL*",
    ])


def test_container_tasks_run_the_steps_in_the_declared_layout(tmp_path, monkeypatch):
    """The step entry point with the arguments of a SageMaker step, run for
    real on FANOUT; between the tasks the test copies what SageMaker copies:
    each step's output prefix to the input mount of the steps that need it."""
    import shutil

    from pytest_mlpbench.step.__main__ import main

    root = tmp_path / "opt-ml-processing"
    s3 = tmp_path / "s3"  # S3ROOT/runs/<run id>
    for name in ("MLPBENCH_EVENTS", "TRACEPARENT", "PYTHONPATH"):  # the task sets them for its process
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not os.environ[name]:
            monkeypatch.delenv(name)
    spec = json.dumps({"workload": "fakes:FANOUT", "scale": "smoke", "run_id": "r1", "artifacts": "", "events": "",
                       "params": {}, "traceparent": None})

    def job(step, *extra, needs=()):
        shutil.rmtree(root, ignore_errors=True)
        for need in needs:  # ProcessingInputs
            shutil.copytree(s3 / "steps" / need, root / "input" / "steps" / need)
        upstream = [f"--upstream={need}={root}/input/steps/{need}" for need in needs]
        assert main(["--step", step, "--spec", spec, "--env", "{}", "--out-dir", str(root / "output"),
                     "--artifacts", str(root / "artifacts" / step), *upstream, *extra]) == 0
        shutil.copytree(root / "output", s3 / "steps" / step, dirs_exist_ok=True)  # ProcessingOutputs

    job("begin", "--fanout-key", "shards")
    items = json.loads(json.loads((s3 / "steps" / "begin" / "fanout.json").read_text())["items"])
    assert items == [0, 1, 2]
    for index in items:
        job("shard", "--index", str(index), needs=("begin",))
    job("gather", needs=("shard",))
    assert json.loads((s3 / "steps" / "gather" / "outputs.json").read_text()) == {"total": 14, "order": [0, 1, 2]}
    events = [json.loads(line) for path in sorted(s3.glob("steps/**/events.jsonl"))
              for line in path.read_text().splitlines()]
    assert sorted((e["step"], e["index"]) for e in events) == [
        ("begin", None), ("gather", None), ("shard", 0), ("shard", 1), ("shard", 2)]
