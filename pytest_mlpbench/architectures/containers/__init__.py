"""A container engine and a locally built image for the container-per-step
architectures (``kubeflow-docker``, ``sagemaker-local``)."""
from pytest_mlpbench.architectures.containers.engine import Engine, open_engine
from pytest_mlpbench.architectures.containers.image import ensure_image

__all__ = ["Engine", "open_engine", "ensure_image"]
