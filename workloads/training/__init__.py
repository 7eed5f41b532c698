"""``training``: prepare data -> train a CNN -> evaluate.

The network has the shape of the classic CIFAR-10 tutorial network (32x32x3
input, 10 classes). Data is generated deterministically, or read from a
CIFAR-10 directory in torchvision's on-disk format when the run's
``data_dir`` names one; nothing is downloaded.
"""
from pytest_mlpbench.model.workload import Step, Workload

STEPS = "workloads.training.steps"

WORKLOAD = Workload(
    name="training",
    ref="workloads.training:WORKLOAD",
    marker="training",
    builtin=True,
    steps=(
        Step("prepare", f"{STEPS}:prepare"),
        Step("train", f"{STEPS}:train", needs=("prepare",)),
        Step("evaluate", f"{STEPS}:evaluate", needs=("prepare", "train")),
    ),
    scales={
        "smoke": {"train_images": 512, "test_images": 256, "epochs": 1, "batch_size": 64, "seed": 0},
        "small": {"train_images": 4000, "test_images": 1000, "epochs": 3, "batch_size": 64, "seed": 0},
        "full": {"train_images": 50000, "test_images": 10000, "epochs": 10, "batch_size": 64, "seed": 0},
    },
)
