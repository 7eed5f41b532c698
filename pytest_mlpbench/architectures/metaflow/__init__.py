"""Metaflow architectures: each workload becomes a generated FlowSpec.

``metaflow-local`` runs it with Metaflow's local runtime; ``metaflow-kubernetes``
and ``metaflow-batch`` run the same flow with ``--with kubernetes`` or
``--with batch`` and an S3 datastore, when configured.
"""
from pytest_mlpbench.architectures.metaflow.local import MetaflowLocal
from pytest_mlpbench.architectures.metaflow.remote import MetaflowBatch, MetaflowKubernetes

__all__ = ["MetaflowBatch", "MetaflowKubernetes", "MetaflowLocal"]
