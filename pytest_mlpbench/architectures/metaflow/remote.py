"""``metaflow-kubernetes`` and ``metaflow-batch``: the flow of ``metaflow-local``
with every step sent to a cluster (``run --with kubernetes`` / ``--with batch``)
and an S3 datastore. The step events and artifact files travel back as
Metaflow artifacts. Metaflow's own configuration (``METAFLOW_HOME``,
``METAFLOW_PROFILE``, ``METAFLOW_*`` variables) stays in force; the options
override it. ``check`` looks only at local configuration: Metaflow can wait
forever on an S3 root or cluster it cannot reach, so nothing is dialled here.
"""
from __future__ import annotations

import os
from pathlib import Path

from pytest_mlpbench.architectures.base import Unavailable
from pytest_mlpbench.architectures.metaflow.local import MAX_WORKERS, MetaflowLocal
from pytest_mlpbench.options import Option


def metaflow_setting(name: str) -> str | None:
    """A Metaflow configuration value: ``METAFLOW_<name>``, else the profile's config file."""
    value = os.environ.get(f"METAFLOW_{name}")
    if value:
        return value
    from metaflow.metaflow_config_funcs import init_config

    try:
        config = init_config()
    except Exception as exc:  # a METAFLOW_PROFILE without its file
        raise Unavailable(f"Metaflow's configuration cannot be read: {exc}") from None
    return config.get(f"METAFLOW_{name}") or None


def aws_credentials_method() -> str | None:
    """How boto3 would find credentials, from local sources only: the
    instance-metadata endpoint is not probed, it is a network call."""
    import botocore.session

    resolver = botocore.session.Session().get_component("credential_provider")
    resolver.remove("iam-role")
    for provider in resolver.providers:
        if provider.load() is not None:
            return provider.METHOD
    return None


S3_ROOT = Option("metaflow_s3_root", "S3 datastore root of metaflow-kubernetes and metaflow-batch, e.g. "
                 "s3://bucket/metaflow (default: Metaflow's METAFLOW_DATASTORE_SYSROOT_S3).", str, None, "S3URI")
IMAGE = Option("metaflow_image", "Container image of the remote Metaflow tasks; it must have pytest-mlpbench and the "
               "workloads installed (default: Metaflow's METAFLOW_KUBERNETES_CONTAINER_IMAGE or "
               "METAFLOW_BATCH_CONTAINER_IMAGE).", str, None, "IMAGE")
KUBE_CONTEXT = Option("metaflow_kube_context", "kubeconfig context of metaflow-kubernetes (default: the current "
                      "context of $KUBECONFIG or ~/.kube/config).", str, None, "NAME")
KUBE_NAMESPACE = Option("metaflow_kube_namespace", "Kubernetes namespace of metaflow-kubernetes (default: Metaflow's "
                        "METAFLOW_KUBERNETES_NAMESPACE, else default).", str, None, "NAME")
BATCH_QUEUE = Option("metaflow_batch_queue", "AWS Batch job queue of metaflow-batch (default: Metaflow's "
                     "METAFLOW_BATCH_JOB_QUEUE).", str, None, "QUEUE")


class _RemoteMetaflow(MetaflowLocal):
    datastore = "s3"
    ship_files = True
    decorator = ""
    image_setting = ""

    def check(self) -> None:
        super().check()
        self.s3_root()
        self.image()
        self.check_backend()
        if aws_credentials_method() is None:
            raise Unavailable(f"{self.name}: no AWS credentials for the S3 datastore; set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials or SSO "
                              "(instance-role credentials are not probed)")

    def check_backend(self) -> None:
        raise NotImplementedError

    def s3_root(self) -> str:
        root = self.option("metaflow_s3_root") or metaflow_setting("DATASTORE_SYSROOT_S3")
        if not root:
            raise Unavailable(f"{self.name}: no S3 datastore; set --mlpbench-metaflow-s3-root=s3://BUCKET/PREFIX "
                              "or METAFLOW_DATASTORE_SYSROOT_S3")
        if not root.startswith("s3://") or len(root) <= len("s3://"):
            raise Unavailable(f"{self.name}: the S3 datastore root must look like s3://BUCKET/PREFIX, got {root!r}")
        return root.rstrip("/")

    def image(self) -> str:
        image = self.option("metaflow_image") or metaflow_setting(self.image_setting)
        if not image:
            raise Unavailable(f"{self.name}: no container image with pytest-mlpbench and the workloads; set "
                              f"--mlpbench-metaflow-image=IMAGE or METAFLOW_{self.image_setting}")
        return image

    def environment(self) -> dict[str, str]:
        # only the local metadata goes under the session; the user's Metaflow configuration stays
        return {"METAFLOW_DATASTORE_SYSROOT_LOCAL": str(self.dir / "store")}

    def top_level_options(self) -> list[str]:
        return [f"--datastore={self.datastore}", f"--datastore-root={self.s3_root()}"]

    def run_options(self) -> list[str]:
        return ["--with", self.decospec()]

    def decospec(self) -> str:
        return f"{self.decorator}:" + ",".join(f"{k}={v}" for k, v in self.decorator_attributes().items())

    def decorator_attributes(self) -> dict[str, str]:
        raise NotImplementedError


class MetaflowKubernetes(_RemoteMetaflow):
    name = "metaflow-kubernetes"
    options = (MAX_WORKERS, S3_ROOT, IMAGE, KUBE_CONTEXT, KUBE_NAMESPACE)
    decorator = "kubernetes"
    image_setting = "KUBERNETES_CONTAINER_IMAGE"

    def check_backend(self) -> None:
        try:
            import kubernetes.config
        except ImportError:
            raise Unavailable(f"{self.name}: the kubernetes package is not installed; pip install kubernetes") from None
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            return  # in a pod: Metaflow uses the pod's service account
        path = self.kubeconfig()
        if not path.is_file():
            raise Unavailable(f"{self.name}: no kubeconfig at {path}; set KUBECONFIG or create ~/.kube/config "
                              "for the cluster (and --mlpbench-metaflow-kube-context=NAME to pick a context)")
        try:
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file=str(path))
        except Exception as exc:  # the loader raises ConfigException for empty or broken files
            raise Unavailable(f"{self.name}: unusable kubeconfig {path}: {exc}; set KUBECONFIG") from None
        wanted = self.option("metaflow_kube_context")
        names = [c["name"] for c in contexts]
        if wanted and wanted not in names:
            raise Unavailable(f"{self.name}: no context {wanted!r} in {path}; contexts: {', '.join(names) or 'none'}")
        if not wanted and not active:
            raise Unavailable(f"{self.name}: {path} has no current context; set --mlpbench-metaflow-kube-context")

    @staticmethod
    def kubeconfig() -> Path:
        first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        return Path(first or "~/.kube/config").expanduser()

    def environment(self) -> dict[str, str]:
        env = super().environment()
        context = self.option("metaflow_kube_context")
        if context:  # Metaflow loads the current context: point it at a copy that selects ours
            env["KUBECONFIG"] = str(self._kubeconfig_with(context))
        return env

    def _kubeconfig_with(self, context: str) -> Path:
        import yaml

        config = yaml.safe_load(self.kubeconfig().read_text())
        config["current-context"] = context
        path = self.dir / "kubeconfig"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        return path

    def decorator_attributes(self) -> dict[str, str]:
        namespace = self.option("metaflow_kube_namespace") or metaflow_setting("KUBERNETES_NAMESPACE") or "default"
        return {"image": self.image(), "namespace": namespace}


class MetaflowBatch(_RemoteMetaflow):
    name = "metaflow-batch"
    options = (MAX_WORKERS, S3_ROOT, IMAGE, BATCH_QUEUE)
    decorator = "batch"
    image_setting = "BATCH_CONTAINER_IMAGE"

    def check_backend(self) -> None:
        self.queue()
        self.iam_role()
        import botocore.session

        if not botocore.session.Session().get_config_variable("region"):
            raise Unavailable(f"{self.name}: no AWS region; set AWS_DEFAULT_REGION or region in ~/.aws/config")

    def queue(self) -> str:
        queue = self.option("metaflow_batch_queue") or metaflow_setting("BATCH_JOB_QUEUE")
        if not queue:
            raise Unavailable(f"{self.name}: no AWS Batch job queue; set --mlpbench-metaflow-batch-queue=QUEUE "
                              "or METAFLOW_BATCH_JOB_QUEUE")
        return queue

    def iam_role(self) -> str:
        role = metaflow_setting("ECS_S3_ACCESS_IAM_ROLE")
        if not role:
            raise Unavailable(f"{self.name}: no IAM role for the Batch jobs to reach S3; set "
                              "METAFLOW_ECS_S3_ACCESS_IAM_ROLE=arn:aws:iam::ACCOUNT:role/NAME")
        return role

    def decorator_attributes(self) -> dict[str, str]:
        return {"image": self.image(), "queue": self.queue(), "iam_role": self.iam_role()}
