"""The steps of the training workload. They exchange file paths, not objects."""
from __future__ import annotations

import numpy as np
import torch

from . import data
from .model import Net


def prepare(ctx) -> dict:
    p = ctx.params
    if p.get("data_dir"):
        (train_x, train_y), (test_x, test_y) = data.load_cifar(p["data_dir"], p["train_images"], p["test_images"])
    else:
        train_x, train_y = data.generate(p["train_images"], p["seed"], split_seed=1)
        test_x, test_y = data.generate(p["test_images"], p["seed"], split_seed=2)
    train_path, test_path = ctx.artifacts / "train.npz", ctx.artifacts / "test.npz"
    ctx.metric("train_images", len(train_x))
    np.savez(train_path, x=train_x, y=train_y)
    np.savez(test_path, x=test_x, y=test_y)
    return {"train_data": str(train_path), "test_data": str(test_path)}


def _tensors(path: str):
    arrays = np.load(path)
    x = torch.from_numpy(arrays["x"]).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
    return x, torch.from_numpy(arrays["y"])


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(ctx, train_data: str, test_data: str) -> dict:
    p = ctx.params
    torch.manual_seed(p["seed"])
    device = _device()
    x, y = _tensors(train_data)
    net = Net().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(p["seed"])
    for _ in range(p["epochs"]):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), p["batch_size"]):
            batch = order[start : start + p["batch_size"]]
            optimizer.zero_grad()
            loss = loss_fn(net(x[batch].to(device)), y[batch].to(device))
            loss.backward()
            optimizer.step()
    model_path = ctx.artifacts / "model.pt"
    torch.save(net.state_dict(), model_path)
    ctx.metric("train_loss", loss.item())
    return {"model": str(model_path)}


def evaluate(ctx, test_data: str, model: str, train_data: str) -> dict:
    device = _device()
    net = Net().to(device)
    net.load_state_dict(torch.load(model, map_location=device))
    net.eval()
    x, y = _tensors(test_data)
    with torch.no_grad():
        predicted = torch.cat([net(x[i : i + 512].to(device)).argmax(1).cpu() for i in range(0, len(x), 512)])
    accuracy = (predicted == y).float().mean().item()
    ctx.metric("accuracy", accuracy)
    return {"accuracy": accuracy}
