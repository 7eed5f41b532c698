"""A local Hugging Face image-to-text checkpoint (a ViT-GPT2 captioner, say)
in place of the default model, named by ``--mlpbench-caption-model``.
Nothing is downloaded: the hub is switched off before ``transformers`` loads."""
from __future__ import annotations

import os
from pathlib import Path


class CaptionModelError(RuntimeError):
    """The named checkpoint cannot be used; the message says what to do."""


def check(path: str) -> None:
    if not (Path(path) / "config.json").is_file():
        raise CaptionModelError(
            f"--mlpbench-caption-model={path}: not a Hugging Face checkpoint directory (no config.json in it)"
        )
    _transformers()


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise CaptionModelError(
            "--mlpbench-caption-model needs the 'transformers' package, which is not installed: "
            "pip install transformers pillow (or leave the option out to use the default captioner)"
        ) from None
    return transformers


def caption(path: str, images, batch_size: int) -> list[str]:
    from PIL import Image

    captioner = _transformers().pipeline("image-to-text", model=path, device=-1)
    pictures = [Image.fromarray(image) for image in images]
    results = captioner(pictures, batch_size=batch_size)
    return [r[0]["generated_text"].strip().lower() for r in results]
