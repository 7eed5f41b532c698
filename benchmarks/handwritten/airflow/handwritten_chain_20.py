"""Twenty light tasks in a row, written by hand as an Airflow user would: a
TaskFlow DAG of one ``@task`` function called twenty times (tasks t000 ...
t019), chained one after another. Drop this file into the dags folder of a
running Airflow 3 and trigger DAG ``handwritten_chain_20``."""
from airflow.sdk import chain, dag, task

TASKS = 20


@task
def light():
    pass


@dag(schedule=None, catchup=False, tags=["handwritten"])
def handwritten_chain_20():
    chain(*[light.override(task_id=f"t{i:03d}")() for i in range(TASKS)])


handwritten_chain_20()
