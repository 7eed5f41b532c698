"""The steps of the captioning workload. They exchange file paths, not objects.

load_model -> caption (one task per shard of images) -> score
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from . import hf, scenes, train
from .bleu import corpus_bleu


def shard_ranges(images: int, shards: int) -> list[list[int]]:
    """``shards`` contiguous ``[start, end)`` ranges covering ``images``; the
    width is the ``shards`` parameter exactly, so static DAGs know it up front."""
    if images < 1 or shards < 1:
        raise ValueError(f"images ({images}) and shards ({shards}) must be 1 or more")
    bounds = [i * images // shards for i in range(shards + 1)]
    return [[a, b] for a, b in zip(bounds[:-1], bounds[1:])]


def load_model(ctx) -> dict:
    p = ctx.params
    if p.get("model"):
        hf.check(p["model"])
        model, kind = p["model"], "hf"
    else:
        model, kind = str(ctx.artifacts / "captioner.pt"), "default"
        shutil.copyfile(train.default_checkpoint(), model)  # staged as an artifact, like any other
        train.load(model)  # fail here, not in every shard, if it does not load
    images, captions = scenes.generate(p["images"], p["seed"])
    scenes_path, truth_path = ctx.artifacts / "scenes.npy", ctx.artifacts / "truth.json"
    np.save(scenes_path, images)
    truth_path.write_text(json.dumps(captions))
    return {"model": model, "model_kind": kind, "images_file": str(scenes_path), "truth_file": str(truth_path),
            "shards": shard_ranges(p["images"], p["shards"])}


def caption(ctx, item, model, model_kind, images_file, truth_file) -> dict:
    start, end = item
    images = np.array(np.load(images_file, mmap_mode="r")[start:end])  # this shard only, as a writable copy
    batch = ctx.params["batch_size"]
    if model_kind == "hf":
        captions = hf.caption(model, images, batch)
    else:
        net, vocab, length = train.load(model)
        captions = [c for i in range(0, len(images), batch)
                    for c in train.caption(net, vocab, length, images[i : i + batch])]
    path = ctx.artifacts / f"captions-{start:06d}-{end:06d}.json"
    path.write_text(json.dumps(captions))
    return {"captions": str(path), "count": len(captions)}


def score(ctx, captions, count, truth_file, **_upstream) -> dict:
    predicted = [c for path in captions for c in json.loads(Path(path).read_text())]
    expected = json.loads(Path(truth_file).read_text())
    if len(predicted) != len(expected):
        raise ValueError(f"the shards captioned {len(predicted)} images, expected {len(expected)}")
    constant = Counter(expected).most_common(1)[0][0]  # the best single caption: a trivial baseline
    figures = {
        "exact_match": float(np.mean([p == e for p, e in zip(predicted, expected)])),
        "bleu": corpus_bleu(predicted, expected),
        "baseline_exact_match": expected.count(constant) / len(expected),
        "baseline_bleu": corpus_bleu([constant] * len(expected), expected),
    }
    for name, value in figures.items():
        ctx.metric(name, value)
    ctx.metric("images", len(expected))
    path = ctx.artifacts / "captions.jsonl"
    path.write_text("".join(json.dumps({"image": i, "caption": p, "truth": e}) + "\n"
                            for i, (p, e) in enumerate(zip(predicted, expected))))
    return {"captions_file": str(path), **figures}
