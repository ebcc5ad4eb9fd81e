"""Small networks and stimuli to try the methods on: test beds that train in seconds on a CPU.

Everything the vision-style experiments and the tests need besides a language model, built
once here so that every method meets the same network:

* :class:`ReLUMLP` -- a ReLU classifier ``d_in -> h_1 -> ... -> h_k -> n_out`` (piecewise
  linear, so the exact polytope walks apply), and :func:`train_digits`, which trains it on
  the digits and returns a :class:`TrainedDigits` (the network, its null twin, the split and
  the test accuracy).
* :class:`MLPAutoencoder` -- a ReLU MLP autoencoder with dropout after every hidden layer
  (the eigenspectrum experiment), and :func:`train_digits_autoencoder`.
* :func:`moving_dot` -- the eigenspectrum paper's moving-dot stimulus (Fig. 4a): a Gaussian
  dot moving along a circle ``(sin 2 pi t, cos 2 pi t)``, rendered as frames.
* :func:`load_digits_images` -- scikit-learn's bundled 8x8 digits (1,797 images, no download).
* :func:`untrained_copy` / :func:`reinitialize_` -- the null network of any model (a test
  bed or a language model): the same architecture with fresh initial weights.

Both networks are ``HookedRootModule`` s built from one hooked ReLU layer whose hooks are
named like TransformerLens's (``hook_input``, ``blocks.L.mlp.hook_pre``,
``blocks.L.mlp.hook_post``), so :func:`neuroprobe.record`, spline codes, polytope densities
and eigenspectra run on them unchanged.  Both trainers share one Adam loop that is
deterministic given ``seed`` (its own generator for the batch order, a forked global RNG for
dropout masks, so the caller's random state is untouched).  A network's initial weights are
drawn under ``torch.manual_seed(seed)`` in module order, and :func:`reinitialize_` redraws
them in the same order, so ``untrained_copy(net, seed)`` of a net built with ``seed`` *is*
its initial weights: there is one way to make a null network.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_fraction,
    check_index_list,
    check_int,
    check_positive_int,
    check_real,
)

__all__ = ["MovingDot", "moving_dot", "ReLUMLP", "MLPAutoencoder", "TrainedDigits",
           "train_digits", "train_digits_autoencoder", "load_digits_images", "untrained_copy",
           "reinitialize_"]


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
    if not (isinstance(sigma, (int, float, np.integer, np.floating))
            and not isinstance(sigma, bool) and sigma > 0 and np.isfinite(sigma)):
        raise NeuroprobeError(f"sigma must be a finite number > 0 pixels; got {sigma!r}.")
    r = 0.3 * size if radius is None else check_real(radius, "radius", minimum=0)
    cycles = check_real(cycles, "cycles")
    peak = check_real(peak, "peak")
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


# ------------------------------------------------------------------------------------------
# the networks: one hooked ReLU layer, stacked
# ------------------------------------------------------------------------------------------
def _widths(sizes, name: str) -> list[int]:
    """Layer widths: a list/tuple of ints (never a bare int, a string, or floats like 2.5)."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise NeuroprobeError(
            f"{name} must be a list of layer widths, e.g. [64, 64, 10]; got {sizes!r}."
        )
    out = check_index_list(sizes, name, allow_empty=True, unique=False, what="width")
    bad = [w for w in out if w < 1]
    if bad:
        raise NeuroprobeError(f"{name} must hold positive widths; got {bad[0]} in {out}.")
    return out


class _ReLULayer(nn.Module):
    """``x -> dropout(hook_post(relu(hook_pre(W x))))``; dropout acts only in train mode."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.W = nn.Linear(d_in, d_out)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.hook_post(torch.relu(self.hook_pre(self.W(x)))))


class _Block(nn.Module):
    """Holds the layer as ``.mlp`` so that its hooks are named ``blocks.L.mlp.hook_*``."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.mlp = _ReLULayer(d_in, d_out, dropout)

    def forward(self, x):
        return self.mlp(x)


def _relu_blocks(sizes: Sequence[int], dropout: float = 0.0) -> nn.ModuleList:
    """``len(sizes) - 1`` hooked ReLU layers ``sizes[i] -> sizes[i + 1]``."""
    return nn.ModuleList([_Block(a, b, dropout) for a, b in zip(sizes[:-1], sizes[1:],
                                                                 strict=True)])


class ReLUMLP(HookedRootModule):
    """A ReLU classifier: ``sizes = [d_in, h_1, ..., h_k, n_out]``, k hooked ReLU layers and
    a linear readout.

    Hooks: ``hook_input``, ``blocks.L.mlp.hook_pre``, ``blocks.L.mlp.hook_post`` and
    ``hook_logits``.  Piecewise linear, so :func:`neuroprobe.path_density` can walk it
    exactly.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first, output last.
    seed : int
        Initialisation seed (global RNG state is restored).

    Examples
    --------
    >>> import torch
    >>> m = ReLUMLP([4, 8, 3], seed=0)
    >>> m(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    >>> sorted(m.hook_dict)[:2]
    ['blocks.0.mlp.hook_post', 'blocks.0.mlp.hook_pre']
    """

    def __init__(self, sizes: Sequence[int], seed: int = 0):
        super().__init__()
        sizes = _widths(sizes, "sizes")
        seed = check_int(seed, "seed")
        if len(sizes) < 2 or min(sizes) < 1:
            raise NeuroprobeError(
                f"sizes must be [d_in, hidden..., n_out] with positive widths; got {sizes}. "
                "E.g. [64, 64, 10]."
            )
        self.sizes = sizes
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.hook_input = HookPoint()
            self.blocks = _relu_blocks(sizes[:-1])
            self.unembed = nn.Linear(sizes[-2], sizes[-1])
            self.hook_logits = HookPoint()
        self.setup()

    def forward(self, x):
        x = self.hook_input(x)
        for b in self.blocks:
            x = b(x)
        return self.hook_logits(self.unembed(x))


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
        if not (isinstance(dropout, (int, float, np.integer, np.floating))
                and not isinstance(dropout, bool) and 0.0 <= float(dropout) < 1.0):
            raise NeuroprobeError(f"dropout must be in [0, 1); got {dropout!r}.")
        d_in = check_positive_int(d_in, "d_in")
        hidden = _widths(hidden, "hidden")
        if not hidden or min(hidden) < 1:
            raise NeuroprobeError(
                f"hidden must be at least one positive layer width, e.g. (256, 128, 256); got "
                f"{tuple(hidden)}."
            )
        seed = check_int(seed, "seed")
        self.d_in, self.hidden, self.dropout = int(d_in), tuple(int(h) for h in hidden), dropout
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.hook_input = HookPoint()
            sizes = (self.d_in, *self.hidden)
            self.blocks = _relu_blocks(sizes, float(dropout))
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


# ------------------------------------------------------------------------------------------
# the null network
# ------------------------------------------------------------------------------------------
def reinitialize_(model, seed: int = 0):
    """Re-initialise every submodule with ``reset_parameters()`` in place; returns ``model``.

    For models that cannot be deep-copied (a TransformerBridge): load a second copy and
    re-initialise that, e.g. ``reinitialize_(npb.load_model("smollm2-135m"))``.  Modules
    without ``reset_parameters`` (RMSNorm scales, rotary tables) keep their values.

    Examples
    --------
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([4, 8, 3], seed=0)
    >>> w = m.blocks[0].mlp.W.weight.clone()
    >>> bool((reinitialize_(m, seed=1).blocks[0].mlp.W.weight != w).any())
    True
    """
    if not isinstance(model, nn.Module):
        raise NeuroprobeError(
            f"model must be a torch module (a network to re-initialise); got "
            f"{type(model).__name__}."
        )
    seed = check_int(seed, "seed")
    n = 0
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for mod in model.modules():
            if hasattr(mod, "reset_parameters") and mod is not model:
                mod.reset_parameters()
                n += 1
    if n == 0:
        raise NeuroprobeError(
            f"no submodule of {type(model).__name__} has reset_parameters(); pass your own "
            "untrained network as null_model=."
        )
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def untrained_copy(model, seed: int = 0):
    """A copy of ``model`` with every parameter re-initialised (see :func:`reinitialize_`).

    The null network for :func:`neuroprobe.class_density`: same architecture, no training.
    For a test bed built with ``seed`` it is exactly the network's initial weights.

    Examples
    --------
    >>> from neuroprobe.testbeds import ReLUMLP
    >>> m = ReLUMLP([4, 8, 3], seed=0)
    >>> u = untrained_copy(m, seed=1)
    >>> bool((u.blocks[0].mlp.W.weight != m.blocks[0].mlp.W.weight).any())
    True
    """
    if not isinstance(model, nn.Module):
        raise NeuroprobeError(
            f"model must be a torch module (a network to copy); got {type(model).__name__}."
        )
    seed = check_int(seed, "seed")
    try:
        new = copy.deepcopy(model)
    except Exception as e:  # bridges hold weak references
        raise NeuroprobeError(
            f"untrained_copy: {type(model).__name__} cannot be deep-copied ({e}); load a "
            "second copy and call reinitialize_(copy, seed) on it."
        ) from None
    return reinitialize_(new, seed)


# ------------------------------------------------------------------------------------------
# the digits and the training loop
# ------------------------------------------------------------------------------------------
def _digits() -> tuple[Float[Tensor, "n 64"], Int[Tensor, " n"]]:
    """The one place the digits are loaded: images scaled to ``[0, 1]`` and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (torch.from_numpy(d.data.astype(np.float32) / 16.0),
            torch.from_numpy(d.target).long())


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
    return _digits()[0]


def _split(x: Tensor, y: Tensor, seed: int, test_size: float):
    """Stratified train/test split (scikit-learn's ``train_test_split``)."""
    from sklearn.model_selection import train_test_split

    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=test_size,
                                      random_state=seed, stratify=y.numpy())
    idx_tr, idx_te = torch.from_numpy(idx_tr), torch.from_numpy(idx_te)
    return x[idx_tr], y[idx_tr], x[idx_te], y[idx_te]


def _fit(model: nn.Module, x: Tensor, target: Tensor | None,
         loss: Callable[[Tensor, Tensor], Tensor], *, epochs: int, batch_size: int, lr: float,
         weight_decay: float, seed: int) -> nn.Module:
    """The one training loop: Adam on minibatches in a seeded random order, in place.

    ``target=None`` trains to reproduce the input (an autoencoder).  The batch order comes
    from a generator seeded with ``seed`` and dropout masks from the global RNG seeded with
    ``seed`` inside ``fork_rng`` (the caller's state is restored), so the same call gives the
    same weights.  Returns ``model`` in eval mode.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # dropout masks
        for _ in range(epochs):
            perm = torch.randperm(x.shape[0], generator=gen)
            for i in range(0, x.shape[0], batch_size):
                idx = perm[i : i + batch_size]
                xb = x[idx]
                value = loss(model(xb), xb if target is None else target[idx])
                opt.zero_grad()
                value.backward()
                opt.step()
    model.eval()
    return model


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    return torch.mean((pred - target) ** 2)


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
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_real(lr, "lr", minimum=0, low_open=True)
    seed = check_int(seed, "seed", minimum=0)
    x = load_digits_images()
    model = MLPAutoencoder(x.shape[1], hidden, dropout, seed)
    return _fit(model, x, None, _mse, epochs=epochs, batch_size=batch_size, lr=lr,
                weight_decay=0.0, seed=seed)


@dataclass(frozen=True, eq=False)
class TrainedDigits:
    """A :class:`ReLUMLP` trained on the digits, its null network and the data it saw.

    Attributes
    ----------
    model : ReLUMLP
        The trained network (eval mode, gradients off).
    untrained : ReLUMLP
        Its own initial weights (``untrained_copy(model, seed)``): the null network.
    x_train, y_train, x_test, y_test : Tensor
        The stratified split: images ``[n, 64]`` float32 in ``[0, 1]``, labels int64.
    accuracy : float
        Test accuracy of :attr:`model`.
    """

    model: ReLUMLP
    untrained: ReLUMLP
    x_train: Float[Tensor, "n_train 64"]
    y_train: Int[Tensor, " n_train"]
    x_test: Float[Tensor, "n_test 64"]
    y_test: Int[Tensor, " n_test"]
    accuracy: float

    def __repr__(self) -> str:
        return (f"TrainedDigits(sizes={self.model.sizes}, n_train={len(self.y_train)}, "
                f"n_test={len(self.y_test)}, accuracy={self.accuracy:.4f})")


def train_digits(
    sizes: Sequence[int] = (64, 64, 64, 64, 10),
    epochs: int = 60,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 64,
    *,
    test_size: float = 0.25,
) -> TrainedDigits:
    """Train a :class:`ReLUMLP` on a stratified training split of the digits (Adam,
    cross-entropy, weight decay 1e-4; a few seconds).

    Returns
    -------
    TrainedDigits
        The network, its untrained null (its own initial weights), the split and the test
        accuracy.

    Examples
    --------
    >>> run = train_digits(sizes=(64, 16, 10), epochs=2)
    >>> run.model.training, run.x_test.shape[1], 0.0 <= run.accuracy <= 1.0
    (False, 64, True)
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_real(lr, "lr", minimum=0, low_open=True)
    seed = check_int(seed, "seed", minimum=0)
    test_size = check_fraction(test_size, "test_size")
    sizes = _widths(sizes, "sizes")
    if len(sizes) < 2 or sizes[0] != 64 or sizes[-1] != 10:
        raise NeuroprobeError(
            f"sizes must start with 64 (8x8 digit images) and end with 10 (digit classes); got "
            f"{sizes}. E.g. (64, 64, 64, 64, 10)."
        )
    xtr, ytr, xte, yte = _split(*_digits(), seed, test_size)
    model = ReLUMLP(list(sizes), seed=seed)
    _fit(model, xtr, ytr, nn.functional.cross_entropy, epochs=epochs, batch_size=batch_size,
         lr=lr, weight_decay=1e-4, seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return TrainedDigits(model, untrained_copy(model, seed), xtr, ytr, xte, yte, acc)
