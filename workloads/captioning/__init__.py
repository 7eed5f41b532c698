"""``captioning`` (batch inference): load the model -> caption the images in
shards, in parallel (fan-out) -> gather the captions and score them.

The images are generated scenes of coloured shapes with true captions (see
``scenes``), so the captions can be scored: exact-match rate and corpus BLEU,
beside a trivial baseline (the most common true caption for every image).
The default model is a small CNN + GRU captioner trained by the project
(``train``); ``model`` (``--mlpbench-caption-model``) names a local Hugging
Face image-to-text checkpoint instead. ``shards`` is the fan-out width.
"""
from pytest_mlpbench.model.workload import Step, Workload
from pytest_mlpbench.options import Option, existing_dir, positive_int

STEPS = "workloads.captioning.steps"

MODEL = Option("caption_model", "Local Hugging Face image-to-text checkpoint directory for the captioning workload, "
               "used instead of the default captioner; needs 'transformers', nothing is downloaded (default: the "
               "project's small CNN+GRU captioner).", existing_dir, None, "DIR",
               param="model")
IMAGES = Option("caption_images", "Images the captioning workload captions (default: by scale, 64 / 1000 / 10000 for "
                "smoke / small / full).", positive_int, None, "N", param="images")
SHARDS = Option("caption_shards", "Shards the captioning workload fans out over, one task each (default: by scale, 2 "
                "/ 4 / 8).", positive_int, None, "N", param="shards")

WORKLOAD = Workload(
    name="captioning",
    ref="workloads.captioning:WORKLOAD",
    marker="inference",
    builtin=True,
    steps=(
        Step("load_model", f"{STEPS}:load_model"),
        Step("caption", f"{STEPS}:caption", needs=("load_model",), foreach="shards"),
        Step("score", f"{STEPS}:score", needs=("load_model", "caption")),
    ),
    scales={
        "smoke": {"images": 64, "shards": 2, "batch_size": 64, "seed": 7, "model": None},
        "small": {"images": 1000, "shards": 4, "batch_size": 100, "seed": 7, "model": None},
        "full": {"images": 10000, "shards": 8, "batch_size": 250, "seed": 7, "model": None},
    },
    options=(MODEL, IMAGES, SHARDS),
)
