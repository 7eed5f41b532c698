"""The default captioner: a small CNN encoder and a GRU decoder.

The encoder keeps a coarse spatial map (4x4) so the decoder can tell left
from right; its features set the GRU's first hidden state and are fed to it at every
step beside the previous word. Captions are
decoded greedily, one word at a time.
"""
from __future__ import annotations

import torch
from torch import nn

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


class Vocabulary:
    def __init__(self, words):
        self.words = [PAD, BOS, EOS, *words]
        self.index = {w: i for i, w in enumerate(self.words)}

    def encode(self, caption: str, length: int) -> list[int]:
        ids = [self.index[BOS], *(self.index[w] for w in caption.split()), self.index[EOS]]
        if len(ids) > length:
            raise ValueError(f"caption {caption!r} is longer than {length - 2} words")
        return ids + [self.index[PAD]] * (length - len(ids))

    def decode(self, ids) -> str:
        words = []
        for i in ids:
            word = self.words[int(i)]
            if word == EOS:
                break
            if word not in (PAD, BOS):
                words.append(word)
        return " ".join(words)


class Captioner(nn.Module):
    def __init__(self, vocab_size: int, hidden: int = 128, embed: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, hidden), nn.Tanh(),
        )
        self.embed = nn.Embedding(vocab_size, embed)
        self.gru = nn.GRU(embed + hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the next word at every position of ``tokens`` (teacher forcing)."""
        features = self.encoder(images)
        hidden, _ = self.gru(self._inputs(tokens, features), features.unsqueeze(0))
        return self.out(hidden)

    def _inputs(self, tokens: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Every step sees the image features beside the previous word."""
        words = self.embed(tokens)
        return torch.cat([words, features.unsqueeze(1).expand(-1, words.shape[1], -1)], dim=-1)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, bos: int, length: int) -> torch.Tensor:
        features = self.encoder(images)
        state = features.unsqueeze(0)
        word = torch.full((len(images), 1), bos, dtype=torch.long)
        words = []
        for _ in range(length):
            hidden, state = self.gru(self._inputs(word, features), state)
            word = self.out(hidden).argmax(-1)
            words.append(word)
        return torch.cat(words, dim=1)


def to_tensor(images) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
