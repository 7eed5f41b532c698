"""The driver of the hand-written MLflow chain (MLflow's multistep-workflow
pattern): one parent run, and under it each of the twenty tasks as an MLflow
project run of the ``light`` entry point, one after another, in this
environment (``env_manager="local"``)."""
from pathlib import Path

import mlflow

TASKS = 20
PROJECT = str(Path(__file__).resolve().parent)


def main():
    # the experiment is the caller's: `mlflow run --experiment-name`, or MLFLOW_EXPERIMENT_NAME
    with mlflow.start_run():
        for i in range(TASKS):
            mlflow.run(PROJECT, entry_point="light", parameters={"step": f"t{i:03d}"}, env_manager="local")


if __name__ == "__main__":
    main()
