"""``airflow-kubernetes``: the session's Airflow runs each step as a
KubernetesPodOperator task in the cluster named by ``--mlpbench-airflow-kube-context``."""
from __future__ import annotations

import importlib.util

from ...events import append_event
from ..base import Unavailable
from . import AirflowLocal
from .client import AirflowError
from .dags import dag_id, kubernetes_dag

PROVIDER = "apache-airflow-providers-cncf-kubernetes"


class AirflowKubernetes(AirflowLocal):
    name = "airflow-kubernetes"
    dag_prefix = "mlpbench_k8s"

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
