"""Architecture entries: name -> class or ``"module:Class"``, imported lazily.

A missing framework SDK makes only that architecture unavailable (its test is
skipped with the install hint); it never breaks the plugin. Architecture
modules therefore import their SDK inside methods, never at module level.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from pytest_mlpbench.architectures.base import Architecture, Unavailable


@dataclass(frozen=True)
class Entry:
    name: str
    target: str | type  # "package.module:Class" or the class itself
    install_hint: str = ""

    def load(self) -> type[Architecture]:
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"; {self.install_hint}" if self.install_hint else ""
            raise Unavailable(f"{self.name}: cannot import {module_name} ({exc}){hint}") from exc
        try:
            return getattr(module, attr)
        except AttributeError:
            raise Unavailable(f"{self.name}: {module_name} has no {attr!r}") from None


_EXTRAS = "install the frameworks with: pip install 'pytest-mlpbench[frameworks]'"

_ARCH = "pytest_mlpbench.architectures"

BUILTIN = [
    Entry("inprocess", f"{_ARCH}.inprocess:InProcess"),
    Entry("subprocess", f"{_ARCH}.subprocesses:Subprocesses"),
    Entry("metaflow-local", f"{_ARCH}.metaflow:MetaflowLocal", _EXTRAS),
    Entry("metaflow-kubernetes", f"{_ARCH}.metaflow:MetaflowKubernetes", _EXTRAS),
    Entry("metaflow-batch", f"{_ARCH}.metaflow:MetaflowBatch", _EXTRAS),
    Entry("airflow-local", f"{_ARCH}.airflow:AirflowLocal", _EXTRAS),
    Entry("airflow-kubernetes", f"{_ARCH}.airflow:AirflowKubernetes", _EXTRAS),
    Entry("kubeflow-local", f"{_ARCH}.kubeflow:KubeflowLocal", _EXTRAS),
    Entry("kubeflow", f"{_ARCH}.kubeflow:KubeflowRemote", _EXTRAS),
    Entry("sagemaker", f"{_ARCH}.sagemaker.remote:SageMaker", _EXTRAS),
    Entry("sagemaker-local", f"{_ARCH}.sagemaker.local:SageMakerLocal", _EXTRAS),
    Entry("kubeflow-docker", f"{_ARCH}.kubeflow.docker:KubeflowDocker", _EXTRAS),
    Entry("dvc", f"{_ARCH}.dvc:Dvc", _EXTRAS),
    Entry("mlflow", f"{_ARCH}.mlflow_projects:MlflowProjects", _EXTRAS),
    Entry("dagster-local", f"{_ARCH}.dagster:DagsterLocal", _EXTRAS),
    Entry("prefect-local", f"{_ARCH}.prefect:PrefectLocal",
          "Prefect runs in its own environment: make install builds .venv-prefect"),
]
