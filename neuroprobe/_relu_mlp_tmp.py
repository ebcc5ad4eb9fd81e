"""A small ReLU MLP with HookPoints (a ``HookedRootModule``) and a digits trainer.

Private helper of the polytope-lens reproduction and tests: hooks are named like
TransformerLens's (``hook_input``, ``blocks.L.mlp.hook_pre``, ``blocks.L.mlp.hook_post``,
``hook_logits``) so spline codes and polytope densities work on it unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

__all__ = ["ReLUMLP", "train_digits", "load_digits_split"]


class _MLPLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.W = nn.Linear(d_in, d_out)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x):
        return self.hook_post(torch.relu(self.hook_pre(self.W(x))))


class _Block(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.mlp = _MLPLayer(d_in, d_out)

    def forward(self, x):
        return self.mlp(x)


class ReLUMLP(HookedRootModule):
    """``sizes = [d_in, h_1, ..., h_k, n_out]``: k ReLU layers and a linear readout.

    Examples
    --------
    >>> m = ReLUMLP([4, 8, 3], seed=0)
    >>> m(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    >>> sorted(m.hook_dict)[:2]
    ['blocks.0.mlp.hook_post', 'blocks.0.mlp.hook_pre']
    """

    def __init__(self, sizes: Sequence[int], seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.sizes = list(sizes)
            self.hook_input = HookPoint()
            self.blocks = nn.ModuleList(
                [_Block(a, b) for a, b in zip(sizes[:-2], sizes[1:-1], strict=False)]
            )
            self.unembed = nn.Linear(sizes[-2], sizes[-1])
            self.hook_logits = HookPoint()
        self.setup()

    def forward(self, x):
        x = self.hook_input(x)
        for b in self.blocks:
            x = b(x)
        return self.hook_logits(self.unembed(x))

    def reinitialized(self, seed: int = 1) -> ReLUMLP:
        """An untrained copy with the same architecture (fresh PyTorch default init)."""
        new = ReLUMLP(self.sizes, seed=seed)
        return new.to(next(self.parameters()).dtype)


def load_digits_split(seed: int = 0, test_size: float = 0.25):
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], split stratified.

    Returns ``(x_train, y_train, x_test, y_test)`` as float32/int64 tensors.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(
        x, d.target, test_size=test_size, random_state=seed, stratify=d.target
    )
    return (torch.from_numpy(xtr), torch.from_numpy(ytr).long(),
            torch.from_numpy(xte), torch.from_numpy(yte).long())


def train_digits(sizes=(64, 64, 64, 64, 10), epochs: int = 60, seed: int = 0,
                 lr: float = 3e-3, batch_size: int = 64):
    """Train a ReLUMLP on the digits training split (Adam, cross-entropy; a few seconds).

    Returns ``(model, untrained_copy, (x_train, y_train, x_test, y_test), test_accuracy)``;
    the untrained copy is the model's own initial weights (the null network).
    """
    xtr, ytr, xte, yte = load_digits_split(seed)
    model = ReLUMLP(list(sizes), seed=seed)
    untrained = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        for s in range(0, len(xtr), batch_size):
            idx = perm[s:s + batch_size]
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    for m in (model, untrained):
        for p in m.parameters():
            p.requires_grad_(False)
    return model, untrained, (xtr, ytr, xte, yte), acc
