"""Twenty light tasks in a row, written by hand as a KFP user would: one
lightweight Python component called twenty times in a ``@dsl.pipeline``, each
call after the previous one, run locally with kfp.local's SubprocessRunner in
this environment (no virtual environment per task).

    python pipeline.py [PIPELINE_ROOT]

The component installs nothing (``install_kfp_package=False``): the tasks run
in the environment that runs this file, which has kfp already, as
``SubprocessRunner(use_venv=False)`` means; otherwise every task would start
with a ``pip install kfp``.
"""
import sys

from kfp import dsl, local

TASKS = 20


@dsl.component(install_kfp_package=False)
def light():
    pass


@dsl.pipeline(name="handwritten-chain-20")
def chain():
    previous = None
    for _ in range(TASKS):
        task = light()
        if previous is not None:
            task.after(previous)
        previous = task


if __name__ == "__main__":
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=sys.argv[1] if len(sys.argv) > 1 else "./local_outputs")
    chain()
