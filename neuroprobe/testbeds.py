"""Stimuli and a small model for the vision-style eigenspectrum experiment.

* :func:`moving_dot` -- the paper's moving-dot stimulus (Fig. 4a): a Gaussian dot moving
  along a circle ``(sin 2 pi t, cos 2 pi t)``, rendered as frames.
* :class:`MLPAutoencoder` -- a ReLU MLP autoencoder with dropout after every hidden layer,
  a ``HookedRootModule`` whose hooks are named like TransformerLens's
  (``blocks.L.mlp.hook_post``), so :func:`neuroprobe.record` and every analysis work on it.
* :func:`train_digits_autoencoder` -- trains it on scikit-learn's bundled 8x8 digits
  (1,797 images, no download) in seconds on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_positive_int

__all__ = ["MovingDot", "moving_dot", "MLPAutoencoder", "train_digits_autoencoder",
           "load_digits_images"]


@dataclass(frozen=True, eq=False)
class MovingDot:
    """Frames of a dot moving along a circle.

    Attributes
    ----------
    frames : Tensor ``[time, size, size]`` float32
        Pixel intensities in ``[0, peak]``.
    position : Tensor ``[time, 2]`` float32
        Dot centre ``(row, col)`` in pixel coordinates.
    time : Tensor ``[time]`` float32
        Stimulus time in ``[0, 1]``.
    """

    frames: Float[Tensor, "time height width"]
    position: Float[Tensor, "time 2"]
    time: Float[Tensor, " time"]

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    def flat(self) -> Float[Tensor, "time pixel"]:
        """Frames flattened to ``[time, size*size]`` (the model's input)."""
        return self.frames.reshape(self.n_frames, -1)

    def to_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"time": self.time.numpy(), "row": self.position[:, 0].numpy(),
             "col": self.position[:, 1].numpy()}
        )

    def __repr__(self) -> str:
        return f"MovingDot(frames{tuple(self.frames.shape)})"


def moving_dot(
    n_frames: int = 200,
    size: int = 8,
    *,
    radius: float | None = None,
    sigma: float = 0.8,
    cycles: float = 1.0,
    peak: float = 1.0,
) -> MovingDot:
    """The moving-dot stimulus: a Gaussian dot on a circle, one frame per time point.

    At time ``t in [0, 1]`` the dot is at ``centre + radius * (sin 2 pi c t, cos 2 pi c t)``
    (``c = cycles``) and pixel ``p`` has intensity ``peak * exp(-|p - dot|^2 / (2 sigma^2))``.

    Parameters
    ----------
    n_frames : int
        Time points.
    size : int
        Frames are ``size x size`` (8 matches scikit-learn's digits).
    radius : float, optional
        Circle radius in pixels (default ``0.3 * size``).
    sigma : float
        Dot width in pixels.
    cycles : float
        Turns around the circle over the stimulus.
    peak : float
        Maximum intensity.

    Returns
    -------
    MovingDot

    Examples
    --------
    >>> dot = moving_dot(n_frames=10, size=8)
    >>> dot.frames.shape, float(dot.frames.max()) <= 1.0
    (torch.Size([10, 8, 8]), True)
    """
    n_frames = check_positive_int(n_frames, "n_frames", minimum=2)
    size = check_positive_int(size, "size", minimum=2)
    if not sigma > 0:
        raise NeuroprobeError(f"sigma must be > 0 pixels; got {sigma!r}.")
    r = 0.3 * size if radius is None else float(radius)
    t = torch.linspace(0.0, 1.0, n_frames, dtype=torch.float64)
    c = (size - 1) / 2.0
    pos = torch.stack(
        [c + r * torch.sin(2 * math.pi * cycles * t), c + r * torch.cos(2 * math.pi * cycles * t)],
        1,
    )
    grid = torch.arange(size, dtype=torch.float64)
    d2 = (grid[None, :, None] - pos[:, 0, None, None]) ** 2 + (
        grid[None, None, :] - pos[:, 1, None, None]
    ) ** 2
    frames = peak * torch.exp(-d2 / (2 * sigma**2))
    return MovingDot(frames=frames.float(), position=pos.float(), time=t.float())


class _MLP(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.W = nn.Linear(d_in, d_out)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.hook_post(torch.relu(self.hook_pre(self.W(x)))))


class _Block(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.mlp = _MLP(d_in, d_out, dropout)

    def forward(self, x):
        return self.mlp(x)


class MLPAutoencoder(HookedRootModule):
    """ReLU MLP autoencoder with dropout after every hidden layer.

    ``d_in -> hidden[0] -> ... -> hidden[-1] -> d_in`` (linear output).  Hooks:
    ``hook_input``, ``blocks.L.mlp.hook_pre``, ``blocks.L.mlp.hook_post`` (after the ReLU,
    before dropout) and ``hook_output``.  Dropout acts only in ``train()`` mode.

    Parameters
    ----------
    d_in : int
        Input width (64 for 8x8 digits).
    hidden : sequence of int
        Hidden widths.
    dropout : float
        Dropout rate in ``[0, 1)`` after every hidden ReLU.
    seed : int
        Initialisation seed (global RNG state is restored).

    Examples
    --------
    >>> import torch
    >>> ae = MLPAutoencoder(64, hidden=(32, 16, 32), dropout=0.2)
    >>> ae.eval()(torch.zeros(3, 64)).shape, sorted(ae.hook_dict)[0]
    (torch.Size([3, 64]), 'blocks.0.mlp.hook_post')
    """

    def __init__(self, d_in: int = 64, hidden: Sequence[int] = (256, 256, 128, 256, 256),
                 dropout: float = 0.0, seed: int = 0):
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise NeuroprobeError(f"dropout must be in [0, 1); got {dropout!r}.")
        self.d_in, self.hidden, self.dropout = int(d_in), tuple(int(h) for h in hidden), dropout
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.hook_input = HookPoint()
            sizes = (self.d_in, *self.hidden)
            self.blocks = nn.ModuleList(
                [_Block(sizes[i], sizes[i + 1], float(dropout)) for i in range(len(sizes) - 1)]
            )
            self.out = nn.Linear(sizes[-1], self.d_in)
            self.hook_output = HookPoint()
        self.setup()

    @property
    def hook_names(self) -> list[str]:
        """Post-ReLU hook of every hidden layer, in depth order."""
        return [f"blocks.{i}.mlp.hook_post" for i in range(len(self.hidden))]

    def forward(self, x):
        x = self.hook_input(x.reshape(x.shape[0], -1))
        for b in self.blocks:
            x = b(x)
        return self.hook_output(self.out(x))


def load_digits_images() -> Float[Tensor, "n 64"]:
    """scikit-learn's bundled 8x8 digits (1,797 images, shipped with the package, no
    download) scaled to ``[0, 1]``, flattened to ``[n, 64]``.

    Examples
    --------
    >>> from neuroprobe import load_digits_images
    >>> x = load_digits_images()
    >>> tuple(x.shape), float(x.min()), float(x.max())
    ((1797, 64), 0.0, 1.0)
    """
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().data.astype(np.float32) / 16.0)


def train_digits_autoencoder(
    dropout: float = 0.0,
    *,
    hidden: Sequence[int] = (256, 256, 128, 256, 256),
    epochs: int = 150,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> MLPAutoencoder:
    """Train an :class:`MLPAutoencoder` on the digits with MSE and Adam; returns it in eval mode.

    Examples
    --------
    >>> ae = train_digits_autoencoder(0.2, hidden=(32,), epochs=1)
    >>> ae.training
    False
    """
    epochs = check_positive_int(epochs, "epochs")
    x = load_digits_images()
    model = MLPAutoencoder(x.shape[1], hidden, dropout, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # dropout masks
        for _ in range(epochs):
            perm = torch.randperm(x.shape[0], generator=gen)
            for i in range(0, x.shape[0], batch_size):
                xb = x[perm[i : i + batch_size]]
                loss = torch.mean((model(xb) - xb) ** 2)
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    return model
