"""Kubeflow Pipelines: the local runner, a KFP API server, and kfp containers on a local engine."""
from .local import KubeflowLocal, KubeflowRemote

__all__ = ["KubeflowLocal", "KubeflowRemote"]
