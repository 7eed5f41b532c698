"""Deterministic training of the default captioner, and where its checkpoint lives.

The repository ships ``captioner.pt``, trained by this module. A checkpoint
carries the fingerprint of the code and settings that made it; when the
shipped one no longer matches (the scenes, the model, ``CONFIG`` or ``train``
changed),
the model is trained again on first use and cached under
``$MLPBENCH_CACHE`` (default ``~/.cache/pytest-mlpbench``), keyed by that
fingerprint. Regenerate the shipped file with
``python -m workloads.captioning.train``.
"""
from __future__ import annotations

import hashlib
import json
import inspect
import os
import tempfile
from pathlib import Path

import torch

from . import model as model_module
from . import scenes
from .model import BOS, Captioner, Vocabulary, to_tensor

HERE = Path(__file__).parent
SHIPPED = HERE / "captioner.pt"
CONFIG = {"scenes": 6000, "seed": 1234, "epochs": 6, "batch_size": 64, "lr": 6e-3, "length": 12}


def fingerprint(config: dict | None = None) -> str:
    """Hash of everything that decides the trained weights."""
    config = config or CONFIG
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for module in (scenes, model_module):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(inspect.getsource(train).encode())
    return digest.hexdigest()[:16]


def train(config: dict | None = None) -> dict:
    """Train from scratch; same config and code, same weights (one thread, fixed seeds)."""
    config = config or CONFIG
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(config["seed"])
        vocab = Vocabulary(scenes.WORDS)
        images, captions = scenes.generate(config["scenes"], config["seed"])
        x = to_tensor(images)
        tokens = torch.tensor([vocab.encode(c, config["length"]) for c in captions])
        net = Captioner(len(vocab.words))
        optimizer = torch.optim.Adam(net.parameters(), lr=config["lr"])
        batches = -(-len(x) // config["batch_size"])
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config["lr"], total_steps=config["epochs"] * batches)
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=vocab.index["<pad>"])
        generator = torch.Generator().manual_seed(config["seed"])
        for _ in range(config["epochs"]):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), config["batch_size"]):
                batch = order[start : start + config["batch_size"]]
                logits = net(x[batch], tokens[batch, :-1])
                loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tokens[batch, 1:].reshape(-1))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
    finally:
        torch.set_num_threads(threads)
    return {"fingerprint": fingerprint(config), "config": config, "words": list(scenes.WORDS),
            "loss": loss.item(), "state_dict": net.state_dict()}


def save(checkpoint: dict, path: Path) -> None:
    """Write atomically, so concurrent first uses never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def cache_dir() -> Path:
    root = os.environ.get("MLPBENCH_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-mlpbench"
    return Path(root) / "captioning"


def default_checkpoint() -> Path:
    """The shipped checkpoint if it matches the code, else a cached (or new) one."""
    expected = fingerprint()
    if SHIPPED.is_file() and torch.load(SHIPPED, map_location="cpu")["fingerprint"] == expected:
        return SHIPPED
    cached = cache_dir() / f"captioner-{expected}.pt"
    if not cached.is_file():
        save(train(), cached)
    return cached


def load(path: str | os.PathLike) -> tuple[Captioner, Vocabulary, int]:
    checkpoint = torch.load(path, map_location="cpu")
    vocab = Vocabulary(checkpoint["words"])
    net = Captioner(len(vocab.words))
    net.load_state_dict(checkpoint["state_dict"])
    net.eval()
    return net, vocab, checkpoint["config"]["length"]


def caption(net: Captioner, vocab: Vocabulary, length: int, images) -> list[str]:
    ids = net.generate(to_tensor(images), vocab.index[BOS], length)
    return [vocab.decode(row) for row in ids]


if __name__ == "__main__":
    checkpoint = train()
    save(checkpoint, SHIPPED)
    print(f"wrote {SHIPPED} ({SHIPPED.stat().st_size} bytes), fingerprint {checkpoint['fingerprint']}, "
          f"final loss {checkpoint['loss']:.4f}")
