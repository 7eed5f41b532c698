"""Twenty light tasks in a row, written by hand as an Airflow user would: a
TaskFlow DAG of one ``@task`` function called twenty times (tasks t000 ...
t019), each taking the one before's return value, as each step of the
``chain-20`` workload takes the outputs of the step it needs. Drop this file
into the dags folder of a running Airflow 3 and trigger DAG
``handwritten_chain_20``."""
from airflow.sdk import dag, task

TASKS = 20


@task
def light(previous=None):
    return {}


@dag(schedule=None, catchup=False, tags=["handwritten"])
def handwritten_chain_20():
    outputs = None
    for i in range(TASKS):
        outputs = light.override(task_id=f"t{i:03d}")(outputs)


handwritten_chain_20()
