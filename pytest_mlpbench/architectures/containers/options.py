"""The options of the container architectures (kubeflow-docker, sagemaker-local)."""
from pytest_mlpbench.options import Option, choice

ENGINE = Option("container_engine", "Container engine of kubeflow-docker and sagemaker-local: auto (the user's "
                "Docker engine where $DOCKER_HOST or /var/run/docker.sock answers, else a Podman API service started "
                "for the session), docker or podman (default: auto).",
                choice("auto", "docker", "podman"), "auto", "ENGINE")
DOCKER_HOST = Option("docker_host", "Docker API endpoint for the container architectures, e.g. "
                     "unix:///var/run/docker.sock (default: $DOCKER_HOST, then the default socket).",
                     str, None, "URL")
IMAGE = Option("container_image", "Image of the container architectures' steps, with python3, kfp and "
               "pytest-mlpbench and the workloads (default: one built locally from Debian, cached).",
               str, None, "IMAGE")
TORCH = Option("container_torch", "Put torch in the locally built image, for the real workloads: yes, no, or auto "
               "(when torch is installed here; default).", choice("auto", "yes", "no"), "auto", "WHEN")
IMAGE_CACHE = Option("image_cache", "Directory of the locally built images, reused between sessions by content hash "
                     "(default: ~/.cache/mlpbench).", str, None, "DIR")

OPTIONS = (ENGINE, DOCKER_HOST, IMAGE, TORCH, IMAGE_CACHE)
