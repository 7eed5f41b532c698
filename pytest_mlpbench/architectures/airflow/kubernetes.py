"""``airflow-kubernetes``: the session's Airflow runs each step as a
KubernetesPodOperator task in the cluster named by ``--mlpbench-airflow-kube-context``."""
from __future__ import annotations

import importlib.util

from pytest_mlpbench.architectures.airflow import AirflowLocal
from pytest_mlpbench.architectures.airflow.client import AirflowError
from pytest_mlpbench.architectures.airflow.dags import dag_id, kubernetes_dag
from pytest_mlpbench.architectures.base import Unavailable
from pytest_mlpbench.options import Option
from pytest_mlpbench.step.events import append_event

PROVIDER = "apache-airflow-providers-cncf-kubernetes"

KUBE_CONTEXT = Option("airflow_kube_context", "Kube context (of $KUBECONFIG or ~/.kube/config) in which "
                      "airflow-kubernetes runs its pods (default: none, airflow-kubernetes is skipped).",
                      str, None, "CONTEXT")
KUBE_NAMESPACE = Option("airflow_kube_namespace", "Namespace of airflow-kubernetes' pods (default: default).",
                        str, "default", "NAMESPACE")
KUBE_IMAGE = Option("airflow_kube_image", "Container image for airflow-kubernetes' pods, with pytest-mlpbench and "
                    "the workloads installed (required with --mlpbench-airflow-kube-context).", str, None, "IMAGE")
KUBE_VOLUME = Option("airflow_kube_volume", "PersistentVolumeClaim mounted at /mlpbench in every pod of "
                     "airflow-kubernetes, for the artifacts steps pass on (required with "
                     "--mlpbench-airflow-kube-context).", str, None, "PVC")


class AirflowKubernetes(AirflowLocal):
    name = "airflow-kubernetes"
    dag_prefix = "mlpbench_k8s"
    options = (*AirflowLocal.options, KUBE_CONTEXT, KUBE_NAMESPACE, KUBE_IMAGE, KUBE_VOLUME)
    # The pods read and write one volume; Object Storage hand-off runs in airflow-local's task processes only.
    handoff_modes = ("shared",)

    def check(self) -> None:
        super().check()
        if importlib.util.find_spec("airflow.providers.cncf.kubernetes") is None:
            raise Unavailable(f"{self.name}: the KubernetesPodOperator is not installed: pip install {PROVIDER}")
        context = self.option("airflow_kube_context")
        if not context:
            raise Unavailable(f"{self.name}: no Kubernetes cluster configured: set --mlpbench-airflow-kube-context="
                              "CONTEXT (a context of $KUBECONFIG or ~/.kube/config), --mlpbench-airflow-kube-image="
                              "IMAGE and --mlpbench-airflow-kube-volume=PVC")
        missing = [flag for flag, name in (("--mlpbench-airflow-kube-image", "airflow_kube_image"),
                                           ("--mlpbench-airflow-kube-volume", "airflow_kube_volume"))
                   if not self.option(name)]
        if missing:
            raise Unavailable(f"{self.name}: --mlpbench-airflow-kube-context={context} also needs {' and '.join(missing)}")
        known = kube_contexts()
        if context not in known:
            raise Unavailable(f"{self.name}: kube context {context!r} not found in the kubeconfig "
                              f"(contexts: {', '.join(known) or 'none'}); set $KUBECONFIG or fix the option")

    def dag_source(self, workload) -> str:
        return kubernetes_dag(workload, context=self.option("airflow_kube_context"),
                              namespace=self.option("airflow_kube_namespace") or "default",
                              image=self.option("airflow_kube_image"), volume=self.option("airflow_kube_volume"))

    def run(self, workload, run) -> None:
        try:
            super().run(workload, run)
        finally:
            self._ship_events(dag_id(workload, self.dag_prefix), workload, run)

    def _ship_events(self, ident: str, workload, run) -> None:
        """Pods cannot write the local event sink: their events come back in their XCom."""
        steps = {step.name for step in workload.steps}
        for step, index in list(run.task_info):
            if step not in steps:
                continue
            try:
                result = self.server.client.xcom(ident, run.spec.run_id, step, -1 if index is None else index)
            except AirflowError:
                continue  # a failed pod pushed nothing; its event is in its log
            for event in (result or {}).get("events", []):
                append_event(run.spec.events, event)


def kube_contexts() -> list[str]:
    try:
        from kubernetes import config

        contexts, _active = config.list_kube_config_contexts()
    except Exception:  # no kubeconfig at all, or an unreadable one
        return []
    return [c["name"] for c in contexts]
