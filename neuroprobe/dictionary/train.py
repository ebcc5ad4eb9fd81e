"""Training sparse autoencoders from a model + corpus or from a stored harvest.

The recipes:

* **L1** (SAELens's April-2024 recipe, Towards Monosemanticity's resampling): inputs scaled
  to mean norm ``sqrt(d_in)``; loss ``||x - x_hat||^2 + lambda * sum_i f_i ||W_dec[i]||``
  (decoder-norm-weighted L1; both terms summed over dimensions / features and averaged over
  the batch's tokens; ``lambda`` warmed up linearly over the first 5% of steps, ``lambda *
  min(1, (step + 1) / max(1, 0.05 * n_steps))``); features that did not fire since the last
  resampling (or the start) are re-initialised at the steps in ``resample_at`` towards
  inputs drawn with probability proportional to their squared loss (Bricken et al. 2023),
  their Adam state reset (see :func:`_resample`).
* **TopK** (Gao et al. 2024 / sparsify): the same scaling, loss ``||x - x_hat||^2``,
  decoder rows kept at unit norm (the gradient's component along each row removed, then
  rows renormalised).

Both run in float32 with Adam.  Batches are consecutive blocks of the (already shuffled)
store, visited in an order drawn from ``seed`` per epoch, so a run is deterministic for a
seed; with ``checkpoint_dir`` the full state (weights, Adam, step, fire counts) is saved
every ``checkpoint_every`` steps and a rerun resumes from the last checkpoint, giving the
same SAE as an uninterrupted run.  When training ends the input scale is folded into the
weights, so the returned SAE takes raw activations.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_bool,
    check_callable,
    check_int,
    check_known_keys,
    check_positive_int,
    check_real,
    check_writable_path,
    resolve_device,
)
from neuroprobe.dictionary.sae import ARCHITECTURES, SAE
from neuroprobe.dictionary.store import ActivationStore, harvest

__all__ = ["train_sae", "train_sae_on_store"]


def train_sae(model, corpus=None, *, hook: str, d_sae: int, architecture: str = "topk",
              k: int = 32, n_tokens: int | None = 1_000_000, context_size: int = 128,
              store_dir=None, store_dtype: str = "float16", harvest_batch_size: int = 16,
              exclude_first: bool = True, text_column: str = "text", **train_kw) -> SAE:
    """Train an SAE at ``hook`` of ``model`` on ``corpus`` (or on an :class:`ActivationStore`).

    Parameters
    ----------
    model : TransformerBridge or ActivationStore
        The model to harvest from; or a store made by :func:`~neuroprobe.dictionary.harvest`
        (then ``corpus`` is not used).
    corpus : texts, path, datasets.Dataset or token-id sequences
    hook : str
        Hook whose output the SAE reconstructs (``"blocks.15.hook_resid_post"``).
    d_sae : int
        Number of features.
    architecture : {"topk", "l1"}
    k : int
        Active features of a TopK SAE.
    n_tokens, context_size, store_dtype, harvest_batch_size, exclude_first, text_column
        Harvest settings (see :func:`~neuroprobe.dictionary.harvest`); the store is written
        to ``store_dir`` (a temporary folder if None).
    **train_kw
        Passed to :func:`train_sae_on_store` (``batch_size``, ``n_steps``, ``lr``,
        ``l1_coefficient``, ``seed``, ``device``, ``checkpoint_dir``, ...).

    Returns
    -------
    SAE
        Trained, taking raw activations of ``hook`` (see :func:`train_sae_on_store`).

    Raises
    ------
    NeuroprobeError
        For an unknown architecture, ``k > d_sae``, an unknown hook or one that does not
        fire, fewer tokens than one batch, or unknown ``train_kw``.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> corpus = [[(7 * i + s) % 50 for i in range(64)] for s in range(40)]
    >>> sae = npb.train_sae(model, corpus, hook="blocks.0.hook_resid_post", d_sae=32, k=4,
    ...                     n_tokens=None, context_size=16, batch_size=64, n_steps=20)
    >>> sae.d_in, sae.d_sae, sae.hook_name
    (16, 32, 'blocks.0.hook_resid_post')
    """
    import inspect

    check_known_keys(train_kw, "train_sae(**train_kw)",
                     [n for n in inspect.signature(train_sae_on_store).parameters
                      if n not in ("store", "hook", "d_sae", "architecture", "k")])
    if not isinstance(hook, str):
        raise NeuroprobeError(f"hook must be one hook name (str); got {hook!r}.")
    _check_sae_shape(architecture, d_sae, k)  # before the (long) harvest
    if isinstance(model, ActivationStore):
        store = model
    else:
        if store_dir is not None:
            check_writable_path(store_dir, "store_dir", directory=True)
        if corpus is None:
            raise NeuroprobeError("train_sae(model, corpus=...) needs a corpus to harvest from.")
        from neuroprobe.core.hooks import resolve_hooks
        from neuroprobe.dictionary.store import _check_model

        _check_model(model)
        resolve_hooks(model, [hook], argname="hook")
        tmp = None
        if store_dir is None:
            tmp = tempfile.mkdtemp(prefix="npb_store_")
        store = harvest(model, corpus, [hook], path=store_dir or tmp, n_tokens=n_tokens,
                        context_size=context_size, batch_size=harvest_batch_size,
                        dtype=store_dtype, exclude_first=exclude_first,
                        seed=int(train_kw.get("seed", 0)), text_column=text_column)
    return train_sae_on_store(store, hook=hook, d_sae=d_sae, architecture=architecture, k=k,
                              **train_kw)


def train_sae_on_store(store: ActivationStore, *, hook: str, d_sae: int,
                       architecture: str = "topk", k: int = 32, batch_size: int = 4096,
                       n_steps: int | None = None, lr: float | None = None,
                       l1_coefficient: float = 5.0, resample_at: tuple[float, ...] = (0.25, 0.5),
                       lr_decay: float = 0.0, seed: int = 0, device: str | None = None,
                       train_tokens: tuple[int, int] | None = None,
                       checkpoint_dir=None, checkpoint_every: int = 100,
                       progress: bool | None = None,
                       callback: Callable[[int, float], None] | None = None) -> SAE:
    """Train an SAE on the rows of a stored harvest (see the module docstring for recipes).

    Parameters
    ----------
    store : ActivationStore
    hook, d_sae, architecture, k
        As in :func:`train_sae`.
    batch_size : int
        Tokens per step.
    n_steps : int, optional
        Steps; default one epoch over the training rows.
    lr : float, optional
        Adam learning rate (default 1e-3 for TopK, 4e-4 for L1).
    l1_coefficient : float
        ``lambda`` of the L1 SAE.
    resample_at : tuple of float
        Fractions of ``n_steps`` at which dead L1 features are resampled (``()``: never).
    lr_decay : float
        Fraction of the final steps over which the learning rate decays linearly to zero
        (SAELens's ``lr_decay_steps``; the April-2024 recipe decays over the last 20%:
        ``0.2``); ``0`` keeps it constant.
    seed : int
    device : str, optional
        ``"cuda"`` when available unless given.
    train_tokens : (start, stop), optional
        Rows of the store to train on (default all), e.g. to hold some out for evaluation.
    checkpoint_dir : str or Path, optional
        Save state there every ``checkpoint_every`` steps and resume from it if present.
    progress : bool, optional
        tqdm progress bar (default: when stderr is a terminal).
    callback : callable, optional
        ``callback(step, loss)`` after every step.

    Returns
    -------
    SAE
        On ``device``, in float32, taking raw activations; ``sae.metadata["training"]``
        holds steps, tokens, tokens/s and the final loss.

    Examples
    --------
    >>> import tempfile, neuroprobe as npb
    >>> from neuroprobe.dictionary import harvest, train_sae_on_store
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> st = harvest(model, [[(3 * i) % 50 for i in range(300)]], "blocks.0.hook_resid_post",
    ...              path=tempfile.mkdtemp(), context_size=16)
    >>> sae = train_sae_on_store(st, hook="blocks.0.hook_resid_post", d_sae=32,
    ...                          architecture="l1", batch_size=64, n_steps=10)
    >>> sae.metadata["training"]["steps"]
    10
    """
    if not isinstance(store, ActivationStore):
        raise NeuroprobeError(
            f"store must be an ActivationStore (from harvest or ActivationStore.open); got "
            f"{type(store).__name__}."
        )
    if not isinstance(hook, str):
        raise NeuroprobeError(f"hook must be one hook name (str); got {hook!r}.")
    d_sae, k = _check_sae_shape(architecture, d_sae, k)
    j = store.hook_column(hook)
    d_in = store.widths[j]
    batch_size = check_positive_int(batch_size, "batch_size")
    if n_steps is not None:
        n_steps = check_int(n_steps, "n_steps", minimum=1)
    if lr is not None:
        lr = check_real(lr, "lr", minimum=0, low_open=True)
    l1_coefficient = check_real(l1_coefficient, "l1_coefficient", minimum=0)
    lr_decay = check_real(lr_decay, "lr_decay", minimum=0, maximum=1)
    if isinstance(resample_at, (str, bytes)) or not hasattr(resample_at, "__iter__"):
        raise NeuroprobeError(
            f"resample_at must be a tuple of fractions of n_steps, e.g. (0.25, 0.5) or (); got "
            f"{resample_at!r}."
        )
    resample_at = tuple(check_real(f, "resample_at entry", minimum=0, maximum=1)
                        for f in resample_at)
    seed = check_int(seed, "seed", minimum=0)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if progress is not None:
        progress = check_bool(progress, "progress")
    if callback is not None:
        check_callable(callback, "callback", 2, expected="callback(step, loss)")
    if checkpoint_dir is not None:
        check_writable_path(checkpoint_dir, "checkpoint_dir", directory=True)
    if train_tokens is None:
        r0, r1 = 0, store.n_tokens
    else:
        if (isinstance(train_tokens, (str, bytes)) or not hasattr(train_tokens, "__len__")
                or len(train_tokens) != 2):
            raise NeuroprobeError(
                f"train_tokens must be a pair (start, stop) of store rows; got {train_tokens!r}."
            )
        r0 = check_int(train_tokens[0], "train_tokens[0] (start)", minimum=0,
                       maximum=store.n_tokens - 1)
        r1 = check_int(train_tokens[1], "train_tokens[1] (stop)", minimum=r0 + 1,
                       maximum=store.n_tokens)
    n_rows = r1 - r0
    if n_rows < batch_size:
        raise NeuroprobeError(
            f"train_sae has {n_rows} training tokens, fewer than one batch of "
            f"batch_size={batch_size}; harvest more tokens or lower batch_size."
        )
    n_batches = n_rows // batch_size
    n_steps = n_batches if n_steps is None else n_steps
    device = str(resolve_device(device)) if device is not None else (
        "cuda" if torch.cuda.is_available() else "cpu")
    lr = (1e-3 if architecture == "topk" else 4e-4) if lr is None else lr

    # ---- input scale and initialisation -----------------------------------------------------
    sample = store.rows(hook, r0, r0 + min(n_rows, 65536)).double()
    if not bool(torch.isfinite(sample).all()):
        bad = int((~torch.isfinite(sample).all(1)).sum())
        raise NeuroprobeError(
            f"the activation store's {hook!r} has NaN or inf in {bad} of the first "
            f"{sample.shape[0]} training rows (NaN activations, or values beyond the store's "
            f"{store.dtype} range); an SAE cannot be trained on them. Check the model, or "
            "harvest in bfloat16."
        )
    if not float(sample.norm(dim=1).max()) > 0:
        raise NeuroprobeError(
            f"the activation store's {hook!r} is all zeros in the first {sample.shape[0]} "
            "training rows; there is nothing for an SAE to reconstruct. Harvest another hook."
        )
    scale = math.sqrt(d_in) / float(sample.norm(dim=1).mean().clamp_min(1e-12))
    sae = SAE(d_in, d_sae, architecture, k=k if architecture == "topk" else None,
              hook_name=hook, model_name=store.meta.get("model_name", ""), seed=seed,
              metadata={"context_size": store.meta.get("context_size"),
                        "prepend_bos": store.meta.get("prepend_bos", True)},
              device=device)
    with torch.no_grad():
        sae.b_dec.copy_((sample.mean(0) * scale).float().to(device))
        if architecture == "topk":
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
            sae.W_enc.copy_(sae.W_dec.T)
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
    resample_steps = sorted({int(f * n_steps) for f in resample_at if 0 < f < 1}) \
        if architecture == "l1" else []
    step, prior_secs = 0, 0.0
    decay_steps = int(round(lr_decay * n_steps))
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    # everything that shapes the run: a resume with another value would mix two recipes
    settings = dict(architecture=architecture, d_sae=d_sae, hook=hook, seed=seed,
                    batch_size=batch_size, n_steps=n_steps, lr_decay=lr_decay, lr=float(lr),
                    k=int(k) if architecture == "topk" else None,
                    l1_coefficient=float(l1_coefficient) if architecture == "l1" else None,
                    resample_at=list(resample_at) if architecture == "l1" else None,
                    train_tokens=[int(r0), int(r1)])
    if ckpt is not None and ckpt.exists():
        st = torch.load(ckpt, map_location=device, weights_only=False)
        _check_resume(st, settings, ckpt)
        sae.load_state_dict(st["sae"])
        opt.load_state_dict(st["opt"])
        fired, step, scale = st["fired"].to(device), int(st["step"]), float(st["scale"])
        prior_secs = float(st.get("seconds", 0.0))

    # ---- the loop ----------------------------------------------------------------------------
    try:
        import sys

        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=n_steps, initial=step, desc=f"train {architecture} SAE",
                   disable=not show, unit="step")
    except ImportError:  # pragma: no cover
        bar = None
    t0, steps_done, loss_val = time.perf_counter(), 0, float("nan")
    order_epoch, order = -1, None
    while step < n_steps:
        epoch = step // n_batches
        if epoch != order_epoch:
            order = np.random.default_rng([seed, epoch]).permutation(n_batches)
            order_epoch = epoch
        b = int(order[step % n_batches])
        x = store.rows(hook, r0 + b * batch_size, r0 + (b + 1) * batch_size).to(device) * scale
        if not bool(torch.isfinite(x).all()):
            raise NeuroprobeError(
                f"the activation store's {hook!r} has NaN or inf in rows "
                f"{r0 + b * batch_size}..{r0 + (b + 1) * batch_size - 1} (step {step}); an SAE "
                "cannot be trained on them. Check the model, or harvest in bfloat16."
            )
        if decay_steps:
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (n_steps - step) / decay_steps)
        if step in resample_steps:
            _resample(sae, opt, ~fired, store, hook, r0, n_rows, scale, seed, step, device)
            fired.zero_()
        loss, f = _loss(sae, x, architecture, l1_coefficient * min(1.0, (step + 1) / max(
            1, 0.05 * n_steps)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if architecture == "topk":
            _remove_parallel_grad(sae)
        opt.step()
        if architecture == "topk":
            with torch.no_grad():
                sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
        fired |= f.any(0)
        step += 1
        steps_done += 1
        loss_val = float(loss.detach())
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(step, loss_val)
        if ckpt is not None and (step % int(checkpoint_every) == 0 or step == n_steps):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save(dict(sae=sae.state_dict(), opt=opt.state_dict(), fired=fired.cpu(),
                            step=step, scale=scale, settings=settings,
                            seconds=prior_secs + time.perf_counter() - t0), tmp)
            tmp.replace(ckpt)
    if bar is not None:
        bar.close()
    secs = prior_secs + time.perf_counter() - t0  # training time of all steps, resumed too
    out = sae.fold_input_scale(scale)
    out.metadata["training"] = dict(
        steps=n_steps, batch_size=batch_size, tokens=n_steps * batch_size, lr=lr,
        lr_decay=lr_decay,
        l1_coefficient=l1_coefficient if architecture == "l1" else None, seed=seed,
        input_scale=scale, final_loss=loss_val,
        tokens_per_s=n_steps * batch_size / secs if secs > 0 else None)
    return out


def _check_sae_shape(architecture, d_sae, k) -> tuple[int, int]:
    """``architecture`` known, ``d_sae`` and ``k`` positive ints, ``k <= d_sae``."""
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise NeuroprobeError(
            f"train_sae(architecture={architecture!r}) is unknown; use 'topk' or 'l1'."
        )
    d_sae = check_positive_int(d_sae, "d_sae")
    k = check_positive_int(k, "k")
    if architecture == "topk" and k > d_sae:
        raise NeuroprobeError(
            f"train_sae(k={k}) is larger than d_sae={d_sae}; lower k or raise d_sae."
        )
    return d_sae, k


def _loss(sae: SAE, x: torch.Tensor, architecture: str, l1: float):
    """Training loss and a ``[batch, d_sae]`` boolean of the features that fired."""
    if architecture == "topk":
        # sparse decode: only the k active rows of W_dec are touched (as sparsify does),
        # a few times fewer FLOPs than a dense [batch, d_sae] @ [d_sae, d_in] product
        val, idx = _TopKEncode.apply(x - sae.b_dec, sae.W_enc, sae.b_enc, sae.k)
        x_hat = torch.nn.functional.embedding_bag(idx, sae.W_dec, per_sample_weights=val,
                                                  mode="sum") + sae.b_dec
        on = torch.zeros(x.shape[0], sae.d_sae, dtype=torch.bool, device=x.device)
        on.scatter_(1, idx, val > 0)
        return (x_hat - x).pow(2).sum(-1).mean(), on
    f = sae.encode(x)
    x_hat = sae.decode(f)
    mse = (x_hat - x).pow(2).sum(-1).mean()
    return mse + l1 * (f * sae.W_dec.norm(dim=1)).sum(-1).mean(), f > 0


class _TopKEncode(torch.autograd.Function):
    """``relu(x_c @ W_enc + b_enc)``'s top-k values and indices, with a sparse backward.

    Only the ``k`` selected pre-activations of each row get a gradient, so the backward
    gathers / scatters ``batch * k`` rows instead of multiplying dense ``[batch, d_sae]``
    matrices (the forward product stays dense: it is what picks the top k)."""

    @staticmethod
    def forward(ctx, xc, W_enc, b_enc, k):
        pre = torch.addmm(b_enc, xc, W_enc)
        val, idx = pre.topk(k, dim=-1, sorted=False)
        val = torch.relu(val)
        ctx.save_for_backward(xc, W_enc, idx, val)
        ctx.mark_non_differentiable(idx)
        return val, idx

    @staticmethod
    def backward(ctx, g_val, g_idx):
        xc, W_enc, idx, val = ctx.saved_tensors
        g = g_val * (val > 0)
        flat = idx.reshape(-1)
        g_x = torch.nn.functional.embedding_bag(idx, W_enc.T, per_sample_weights=g,
                                                mode="sum")
        rows = (g[..., None] * xc[:, None, :]).reshape(-1, xc.shape[1])
        g_W = torch.zeros(W_enc.shape[1], W_enc.shape[0], dtype=xc.dtype, device=xc.device)
        g_W.index_add_(0, flat, rows)
        g_b = torch.zeros(W_enc.shape[1], dtype=xc.dtype, device=xc.device)
        g_b.index_add_(0, flat, g.reshape(-1))
        return g_x, g_W.T, g_b, None


def _remove_parallel_grad(sae: SAE) -> None:
    g, w = sae.W_dec.grad, sae.W_dec.data
    if g is not None:
        wn = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        g.sub_((g * wn).sum(1, keepdim=True) * wn)


def _resample(sae: SAE, opt, dead: torch.Tensor, store: ActivationStore, hook: str, r0: int,
              n_rows: int, scale: float, seed: int, step: int, device) -> None:
    """Towards Monosemanticity: dead features point at inputs drawn prop. to squared loss.

    On a window of ``min(n_rows, 16384)`` consecutive training rows (start drawn from
    ``[seed, step]``), scaled by ``scale``: each dead feature ``i`` gets an input ``x``
    drawn with probability proportional to ``||sae(x) - x||^2``, and with
    ``v = (x - b_dec) / ||x - b_dec||``:

    * ``W_dec[i] = v * mean_alive ||W_dec[j]||`` (the normalised input; Bricken et al. keep
      unit decoder rows, where this is the same; with the decoder-norm-weighted L1 the rows'
      norms are free, so the live rows' mean norm is kept, or 1 when no feature is alive),
    * ``W_enc[:, i] = 0.2 * v * mean_alive ||W_enc[:, j]||`` (1 instead of the mean when no
      feature is alive),
    * ``b_enc[i] = 0``,

    and Adam's first and second moments of those entries are set to zero.  Live features,
    ``b_dec`` and their Adam state are not touched.  ``dead`` is a boolean ``[d_sae]``.
    """
    idx = torch.nonzero(dead).flatten()
    if idx.numel() == 0:
        return
    rng = np.random.default_rng([seed, step, 7])
    m = min(n_rows, 16384)
    s = int(rng.integers(0, n_rows - m + 1))
    x = store.rows(hook, r0 + s, r0 + s + m).to(device) * scale
    with torch.no_grad():
        err = (sae(x) - x).pow(2).sum(-1).double()
        p = (err / err.sum()).cpu().numpy()
        pick = rng.choice(m, size=idx.numel(), replace=idx.numel() > m, p=p)
        v = x[torch.as_tensor(pick, device=x.device)] - sae.b_dec
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        alive = ~dead
        enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
        sae.W_dec[idx] = v * sae.W_dec[alive].norm(dim=1).mean() if alive.any() else v
        sae.W_enc[:, idx] = (v * enc_norm * 0.2).T
        sae.b_enc[idx] = 0.0
        for prm in (sae.W_enc, sae.W_dec, sae.b_enc):
            st = opt.state.get(prm)
            if not st:
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                if prm is sae.W_enc:
                    st[key][:, idx] = 0.0
                else:
                    st[key][idx] = 0.0


_FIRST_SETTINGS = ("architecture", "d_sae", "hook", "seed", "batch_size", "n_steps", "lr_decay")


def _check_resume(st: dict, settings: dict, path: Path) -> None:
    """Refuse to resume a checkpoint written with other settings.  Checkpoints from before
    ``lr``, ``k``, ``l1_coefficient``, ``resample_at`` and ``train_tokens`` were saved are
    compared on the settings they hold."""
    old = {"lr_decay": 0.0, **st.get("settings", {})}  # checkpoints from before lr_decay
    diff = {k: (old.get(k), v) for k, v in settings.items()
            if (k in _FIRST_SETTINGS or k in old) and old.get(k) != v}
    if diff:
        raise NeuroprobeError(
            f"checkpoint {path} was written with other settings {diff} (saved, now); pass the "
            "same settings to resume, or another checkpoint_dir to start afresh."
        )
