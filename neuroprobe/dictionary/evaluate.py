"""Evaluating an SAE: reconstruction, sparsity, density, and the loss with it spliced in.

Reconstruction metrics are streamed over held-out contexts in float64 (one pass that stops
at the hooked layer): L0 (mean active features per token), FVU (fraction of variance
unexplained, ``sum ||x - x_hat||^2 / sum ||x - mean||^2``) and explained variance, MSE,
cosine similarity and L2 ratio ``||x_hat|| / ||x||``, dead features (never fired over the
evaluation tokens) and dense features (firing on more than ``dense_threshold`` of them), and
the log10 feature-density histogram.

The downstream metrics run the whole model with the reconstruction spliced into the hook
(the SAELens formula): ``CE loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)``
with the zero-ablation baseline, and ``KL(p_clean || p_sae)`` per token.  Positions that the
harvest leaves out (position 0, the attention sink, by default) are left as they are, and
the loss is averaged over the predictions made at the spliced positions.  At a block's
residual output (``blocks.L.hook_resid_post``, the usual SAE site) the clean pass keeps the
hook's output and each replaced pass resumes at block ``L + 1`` from the replaced residual
(:func:`~neuroprobe.core.engine.resume_forward`), so blocks ``0..L`` run once per batch
instead of once per replacement; the first batch checks that resuming reproduces the clean
logits, else whole spliced passes run.

Every number has a PCA counterpart with as many components as the SAE's (rounded) L0,
fitted on the same evaluation tokens (which favours PCA): FVU, MSE, cosine, L2 ratio, CE
loss and KL of the PCA reconstruction ``mean + (x - mean) U U'``.  Its FVU comes from the
float64 eigenvalues; the other numbers from the reconstruction itself, computed in float32
(the same function that is spliced into the model for CE and KL) with its error sums
accumulated in float64, like the SAE's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from neuroprobe.core.engine import can_resume, hooked, resume_forward
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_bool,
    check_index_list,
    check_int,
    check_positive_int,
    check_real,
)
from neuroprobe.dictionary.sae import SAE, _check_sae_at_hook
from neuroprobe.dictionary.store import corpus_contexts, kept_positions

__all__ = ["SAEEvaluation", "evaluate_sae", "spliced_losses"]


@dataclass(frozen=True)
class SAEEvaluation:
    """Metrics of an SAE at its hook, each beside a PCA with ``pca_components`` components.

    Made by :func:`evaluate_sae`; ``x`` is a hook output, ``x_hat`` its reconstruction, and
    means are over the ``n_tokens`` evaluation tokens.

    Attributes
    ----------
    hook, architecture : str
    d_in, d_sae, n_tokens : int
        ``n_tokens``: evaluation tokens of the reconstruction metrics.
    l0 : float
        Mean number of features firing (``f > 0``) per token.
    fvu : float
        ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``.
    mse : float
        ``sum ||x - x_hat||^2 / (n_tokens * d_in)``.
    cosine : float
        Mean over tokens of ``cos(x, x_hat)`` (0 for a token whose ``x_hat`` is zero).
    l2_ratio : float
        Mean over tokens of ``||x_hat|| / ||x||``.
    dead_fraction, dense_fraction : float
        Fraction of features that never fired, and that fired on more than
        ``dense_threshold`` of the tokens.
    feature_density : ndarray ``[d_sae]``
        Fraction of evaluation tokens on which each feature fired.
    pca_eigenvalues : ndarray ``[d_in]``
        Eigenvalues of the evaluation tokens' covariance, largest first (the PCA baseline;
        :meth:`pca_fvu_with` gives the FVU of any number of components).
    pca_components : int
        ``round(l0)`` (at least 1, at most ``d_in``).
    pca_fvu, pca_mse, pca_cosine, pca_l2_ratio : float
        The same metrics for the PCA reconstruction.
    n_ce_tokens : int
        Predictions over which the spliced losses are averaged.
    ce_clean, ce_sae, ce_zero, ce_pca, kl_sae, kl_pca : float
        Mean next-token CE of the clean model and with the SAE / zeros / PCA spliced in;
        mean ``KL(p_clean || p_spliced)``.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.dictionary import SAE, evaluate_sae
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> sae = SAE(16, 32, "topk", k=4, hook_name="blocks.0.hook_resid_post")
    >>> ev = evaluate_sae(sae, model, [list(range(50)) * 4], n_tokens=150, context_size=16)
    >>> ev.l0 <= 4, 0 <= ev.dead_fraction <= 1, ev.to_dataframe().shape
    (True, True, (11, 2))
    """

    hook: str
    architecture: str
    d_in: int
    d_sae: int
    n_tokens: int
    l0: float
    fvu: float
    mse: float
    cosine: float
    l2_ratio: float
    dead_fraction: float
    dense_fraction: float
    feature_density: np.ndarray = field(repr=False)
    pca_eigenvalues: np.ndarray = field(repr=False)
    pca_components: int
    pca_fvu: float
    pca_mse: float
    pca_cosine: float
    pca_l2_ratio: float
    n_ce_tokens: int
    ce_clean: float
    ce_sae: float
    ce_zero: float
    ce_pca: float
    kl_sae: float
    kl_pca: float

    @property
    def explained_variance(self) -> float:
        """``1 - fvu``."""
        return 1.0 - self.fvu

    @property
    def ce_loss_recovered(self) -> float:
        """``(CE_zero - CE_sae) / (CE_zero - CE_clean)`` (NaN when ``CE_zero = CE_clean``)."""
        return _recovered(self.ce_zero, self.ce_sae, self.ce_clean)

    @property
    def pca_ce_loss_recovered(self) -> float:
        """``(CE_zero - CE_pca) / (CE_zero - CE_clean)`` (NaN when ``CE_zero = CE_clean``)."""
        return _recovered(self.ce_zero, self.ce_pca, self.ce_clean)

    def pca_fvu_with(self, n_components: int) -> float:
        """FVU of a PCA with ``n_components`` components on the evaluation tokens (e.g. 32,
        the issue's fixed baseline, beside ``pca_fvu`` at ``round(L0)`` components).

        Parameters
        ----------
        n_components : int
            From 1 to ``d_in``.

        Returns
        -------
        float
            ``1 - sum(top n_components eigenvalues) / sum(eigenvalues)``.

        Examples
        --------
        >>> import numpy as np
        >>> from neuroprobe.dictionary.evaluate import SAEEvaluation
        >>> ev = SAEEvaluation.__new__(SAEEvaluation)
        >>> object.__setattr__(ev, "pca_eigenvalues", np.array([3.0, 1.0]))
        >>> ev.pca_fvu_with(1)
        0.25
        """
        ev = np.asarray(self.pca_eigenvalues, dtype=np.float64)
        m = check_int(n_components, "n_components", minimum=1, maximum=ev.size)
        return float(1.0 - ev[:m].sum() / ev.sum())

    def log10_density_histogram(self, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges of ``log10(feature_density)`` (dead features left out).

        Parameters
        ----------
        bins : int
            Number of bins, spanning ``log10(1 / n_tokens)`` (rounded down) to 0.

        Returns
        -------
        counts : ndarray ``[bins]``
        edges : ndarray ``[bins + 1]``
        """
        d = self.feature_density[self.feature_density > 0]
        lo = math.floor(math.log10(1.0 / max(self.n_tokens, 1)))
        return np.histogram(np.log10(d), bins=bins, range=(lo, 0.0))

    def to_dataframe(self) -> pd.DataFrame:
        """One row per metric, columns ``sae`` and ``pca``.

        Returns
        -------
        pandas.DataFrame
            Indexed by metric: ``l0`` (the PCA's is its number of components), ``fvu``,
            ``explained_variance``, ``mse``, ``cosine``, ``l2_ratio``, ``dead_fraction``,
            ``dense_fraction`` (NaN for the PCA), ``ce_loss``, ``ce_loss_recovered``, ``kl``.

        Examples
        --------
        >>> import neuroprobe as npb
        >>> from neuroprobe.dictionary import SAE, evaluate_sae
        >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
        >>> sae = SAE(16, 32, "topk", k=4, hook_name="blocks.0.hook_resid_post")
        >>> ev = evaluate_sae(sae, model, [list(range(50)) * 4], n_tokens=150, context_size=16)
        >>> df = ev.to_dataframe()
        >>> list(df.columns), float(df.loc["l0", "pca"]), int(df["pca"].isna().sum())
        (['sae', 'pca'], 4.0, 2)
        """
        rows = [("l0", self.l0, float(self.pca_components)), ("fvu", self.fvu, self.pca_fvu),
                ("explained_variance", self.explained_variance, 1 - self.pca_fvu),
                ("mse", self.mse, self.pca_mse), ("cosine", self.cosine, self.pca_cosine),
                ("l2_ratio", self.l2_ratio, self.pca_l2_ratio),
                ("dead_fraction", self.dead_fraction, np.nan),
                ("dense_fraction", self.dense_fraction, np.nan),
                ("ce_loss", self.ce_sae, self.ce_pca),
                ("ce_loss_recovered", self.ce_loss_recovered, self.pca_ce_loss_recovered),
                ("kl", self.kl_sae, self.kl_pca)]
        return pd.DataFrame(rows, columns=["metric", "sae", "pca"]).set_index("metric")

    def to_dict(self) -> dict:
        """The scalar metrics as a JSON-ready dict.

        Returns
        -------
        dict
            Every field but ``feature_density`` and ``pca_eigenvalues``, plus
            ``explained_variance``, ``ce_loss_recovered`` and ``pca_ce_loss_recovered``.
        """
        out = {k: v for k, v in self.__dict__.items()
               if k not in ("feature_density", "pca_eigenvalues")}
        out.update(explained_variance=self.explained_variance,
                   ce_loss_recovered=self.ce_loss_recovered,
                   pca_ce_loss_recovered=self.pca_ce_loss_recovered)
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                for k, v in out.items()}

    def plot(self, ax=None):
        """The log10 feature-density histogram, dead fraction in the title.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw (default: a new figure).

        Returns
        -------
        matplotlib Axes

        Examples
        --------
        >>> import neuroprobe as npb
        >>> from neuroprobe.dictionary import SAE, evaluate_sae
        >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
        >>> sae = SAE(16, 32, "topk", k=4, hook_name="blocks.0.hook_resid_post")
        >>> ev = evaluate_sae(sae, model, [list(range(50)) * 4], n_tokens=150, context_size=16)
        >>> ev.plot().get_xlabel()
        'log10 feature density'
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        counts, edges = self.log10_density_histogram()
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4477aa")
        ax.set_xlabel("log10 feature density")
        ax.set_ylabel("features")
        ax.set_title(f"{self.architecture} SAE at {self.hook}: L0 {self.l0:.1f}, "
                     f"dead {100 * self.dead_fraction:.1f}%", fontsize=9)
        return ax

    def __repr__(self) -> str:
        return (f"SAEEvaluation({self.architecture}, {self.hook}, n_tokens={self.n_tokens}, "
                f"l0={self.l0:.2f}, fvu={self.fvu:.4f} (pca {self.pca_fvu:.4f}), "
                f"ce_loss_recovered={self.ce_loss_recovered:.3f}, "
                f"dead={self.dead_fraction:.3f})")


def _recovered(zero: float, spliced: float, clean: float) -> float:
    den = zero - clean
    return float((zero - spliced) / den) if den != 0 else float("nan")


def _error_sums(x: Tensor, xh: Tensor) -> tuple[float, float, float]:
    """Sums over tokens (float64 rows) of the squared error, the cosine of ``xh`` with ``x``
    (0 where either is all zeros) and the norm ratio ``||xh|| / ||x||``."""
    nx, nh = x.norm(dim=1), xh.norm(dim=1)
    return (float(((xh - x) ** 2).sum()),
            float(((xh * x).sum(1) / (nx * nh).clamp_min(1e-30)).sum()),
            float((nh / nx.clamp_min(1e-30)).sum()))


class _ReconStats:
    """Streaming probe: float64 sums for the reconstruction metrics of one SAE."""

    def __init__(self, sae: SAE, hook: str):
        self.sae, self.hooks = sae, [hook]
        d = sae.d_in
        self.n = 0
        self.sx = torch.zeros(d, dtype=torch.float64)
        self.sxx = torch.zeros(d, d, dtype=torch.float64)
        self.sse = self.cos = self.l2r = self.l0 = 0.0
        self.fires = torch.zeros(sae.d_sae, dtype=torch.float64)

    def update(self, acts: dict[str, Tensor], meta) -> None:
        x = acts[self.hooks[0]].detach()
        if x.shape[-1] != self.sae.d_in:
            raise NeuroprobeError(
                f"the SAE has d_in={self.sae.d_in}, but hook {self.hooks[0]!r} has width "
                f"{x.shape[-1]}; evaluate the SAE at the hook it was trained on."
            )
        with torch.no_grad():
            f = self.sae.encode(x)
            xh = self.sae.decode(f).double().cpu()
        x = x.double().cpu()
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sxx += x.T @ x
        sse, cos, l2r = _error_sums(x, xh)
        self.sse, self.cos, self.l2r = self.sse + sse, self.cos + cos, self.l2r + l2r
        on = (f > 0).double().cpu()
        self.l0 += float(on.sum())
        self.fires += on.sum(0)

    def merge(self, other):  # pragma: no cover
        raise NeuroprobeError("evaluation statistics are not merged.")


def spliced_losses(model, contexts: Sequence[Sequence[int]], hook: str, replacements: dict,
                   *, first_position: int = 1, batch_size: int = 8) -> dict:
    """Mean next-token CE with each replacement spliced into ``hook``, and KL to the clean run.

    Parameters
    ----------
    model : TransformerBridge
    contexts : token-id sequences of one length
    hook : str
    replacements : dict name -> callable ``[n, d] -> [n, d]`` or None
        ``None`` is the clean run (always computed, as ``"clean"``).
    first_position : int
        Positions before it are not replaced; CE/KL average over predictions made at
        positions ``first_position .. L-2``.

    Returns
    -------
    dict
        ``{"n_tokens": int, "ce": {name: float}, "kl": {name: float}}``.

    Notes
    -----
    Each row's log-sum-exp is taken in the logits' dtype with the maximum and the log added
    in float64, and every per-token value is summed in float64: for float32 logits over a
    49k-way vocabulary CE and KL are within about 1e-8 (nats per token) of a float64
    log-softmax, and no float64 copy of the logits is made: the clean run plus two
    replacements take about half the time of a float64 log-softmax
    (``benchmarks/spliced_losses.py``: 1.92x on 4,032 predictions x 49,152).

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.dictionary import spliced_losses
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> out = spliced_losses(model, [[1, 2, 3, 4, 5]] * 2, "blocks.0.hook_resid_post",
    ...                      {"same": lambda x: x})
    >>> out["n_tokens"], abs(out["ce"]["same"] - out["ce"]["clean"]) < 1e-6
    (6, True)
    """
    from neuroprobe.core.hooks import resolve_hooks

    if not isinstance(model, torch.nn.Module):
        raise NeuroprobeError(
            f"model must be a model (a torch.nn.Module such as npb.load_model(...)); got "
            f"{type(model).__name__} {str(model)[:40]!r}."
        )
    p0 = check_int(first_position, "first_position", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(hook, str):
        raise NeuroprobeError(f"hook must be one hook name (str); got {hook!r}.")
    canonical = hook
    if hasattr(model, "hook_dict"):  # a hooked model: unknown names named with close matches
        canonical = resolve_hooks(model, [hook], argname="hook")[0].canonical
    if not isinstance(replacements, dict):
        raise NeuroprobeError(
            f"replacements must be a dict name -> callable [n, d] -> [n, d] (or None); got "
            f"{type(replacements).__name__}."
        )
    for name, fn in replacements.items():
        if fn is not None and not callable(fn):
            raise NeuroprobeError(
                f"replacements[{name!r}] must be a callable [n, d] -> [n, d] or None; got "
                f"{type(fn).__name__}."
            )
    if isinstance(contexts, (str, bytes)) or not hasattr(contexts, "__iter__"):
        raise NeuroprobeError(
            f"contexts must be a list of token-id sequences; got {type(contexts).__name__}."
        )
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    rows = [check_index_list(c, f"contexts[{i}]", unique=False, what="token id",
                             size=None if d_vocab is None else int(d_vocab))
            for i, c in enumerate(contexts)]
    lens = sorted({len(r) for r in rows})
    if len(lens) > 1:
        raise NeuroprobeError(
            f"contexts must all have one length; got lengths {lens[:5]}. Cut them with "
            "corpus_contexts(model, corpus, n_tokens=..., context_size=...)."
        )
    ids_all = torch.as_tensor(rows, dtype=torch.long)
    if ids_all.ndim != 2 or ids_all.shape[1] < first_position + 2:
        raise NeuroprobeError(
            f"spliced_losses needs contexts of one length >= {first_position + 2}; got shape "
            f"{tuple(ids_all.shape)}."
        )
    dev = next(iter(model.parameters())).device
    names = ["clean"] + [n for n in replacements if n != "clean"]
    ce = {n: 0.0 for n in names}
    kl = {n: 0.0 for n in names}
    count = 0
    start = _resume_block(model, canonical)
    for s in range(0, ids_all.shape[0], batch_size):
        ids = ids_all[s:s + batch_size].to(dev)
        tgt = ids[:, p0 + 1:]
        if start is not None:  # the clean pass keeps the hook's output; the others resume
            clean_logits, act = _run_keeping(model, ids, hook)
            if s == 0 and not torch.allclose(resume_forward(model, act, start), clean_logits,
                                             rtol=1e-4, atol=1e-4):
                start = None  # this model does not resume from its residual: whole passes
        x_clean = p_clean = lse_clean = None
        for name in names:
            fn = replacements.get(name)
            if start is not None:
                logits = clean_logits if fn is None else resume_forward(
                    model, _replaced(act, fn, p0, hook), start)
            else:
                logits = _run_spliced(model, ids, hook, fn, p0)
            y = logits[:, p0:-1]
            lse, e, e_sum = _log_sum_exp(y)
            ce[name] += float((lse - y.gather(-1, tgt[..., None])[..., 0].double()).sum())
            if p_clean is None:  # the clean pass comes first
                x_clean, lse_clean = y, lse
                p_clean = e.div_(e_sum)
            else:  # KL_t = sum_v p_v (x_v - y_v) - (lse(x) - lse(y)), as sum_v p_v = 1
                cross = torch.einsum("blv,blv->bl", p_clean, x_clean - y).double()
                kl[name] += float((cross - (lse_clean - lse)).sum())
            del e, e_sum, logits, y
        del x_clean, p_clean
        count += tgt.numel()
    # KL >= 0; for equal distributions the float32 sums can round to about -1e-8
    return {"n_tokens": count, "ce": {n: v / count for n, v in ce.items()},
            "kl": {n: max(v / count, 0.0) for n, v in kl.items()}}


def _log_sum_exp(y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``log sum_v exp(y_v)`` over the last axis in float64 (absolute error about 1e-7 for
    float32 logits, against 1e-6 for a float32 result), ``e = exp(y - max)`` and its row sums
    ``[..., 1]`` (``e / sum`` is the softmax, with no second pass over the rows).

    The exponentials and their sum stay in the logits' dtype (no float64 copy of the 49k-way
    rows); the maximum and the log are added in float64.
    """
    m = y.amax(-1, keepdim=True)
    e = torch.exp(y - m)
    e_sum = e.sum(-1, keepdim=True)
    return m[..., 0].double() + torch.log(e_sum[..., 0].double()), e, e_sum


#: a block's residual input / output: TransformerLens names and a TransformerBridge's canonical ones
_RESID = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|in|out)$")


def _resume_block(model, hook: str) -> int | None:
    """The block a pass can resume at with ``hook``'s (replaced) output as its residual
    input: ``L + 1`` for ``blocks.L.hook_resid_post``, ``L`` for ``blocks.L.hook_resid_pre``
    (L > 0); None for other hooks, the last block's output, or a model that cannot resume."""
    m = _RESID.match(hook)
    n_layers = getattr(getattr(model, "cfg", None), "n_layers", None)
    if m is None or n_layers is None or not can_resume(model):
        return None
    start = int(m.group(1)) + (1 if m.group(2) in ("resid_post", "out") else 0)
    return start if 0 < start < int(n_layers) else None


def _not_fired(hook: str) -> NeuroprobeError:
    return NeuroprobeError(
        f"hook {hook!r} did not fire on a forward pass; splice at a hook of this model "
        "(see npb.hook_names(model))."
    )


def _run_keeping(model, ids: Tensor, hook: str) -> tuple[Tensor, Tensor]:
    """The clean logits and ``hook``'s output on the same pass."""
    kept = {}

    def keep(act: Tensor, hook=None) -> None:
        kept["act"] = act.detach().clone()

    with hooked(model, [(hook, keep)]) as fwd:
        logits = fwd.run(ids)
    if "act" not in kept:
        raise _not_fired(hook)
    return logits, kept["act"]


def _replaced(act: Tensor, fn, p0: int, hook) -> Tensor:
    """``act`` with positions ``p0:`` replaced by ``fn`` of them (rows of ``[n, d]``)."""
    out = act.clone()
    x = act[:, p0:]
    flat = x.reshape(-1, x.shape[-1])
    y = fn(flat)
    if not isinstance(y, Tensor) or tuple(y.shape) != tuple(flat.shape):
        raise NeuroprobeError(
            f"a replacement at {hook.name if hasattr(hook, 'name') else hook} must "
            f"return a tensor of its input's shape {tuple(flat.shape)}; got "
            f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}."
        )
    out[:, p0:] = y.reshape(x.shape).to(act.dtype)
    return out


def _run_spliced(model, ids: Tensor, hook: str, fn, p0: int) -> Tensor:
    fired = {"n": 0}

    def splice(act: Tensor, hook=None) -> Tensor:
        fired["n"] += 1
        return _replaced(act, fn, p0, hook)

    with torch.no_grad():
        if fn is None:
            return model(ids)
        with hooked(model, [(hook, splice)]):
            logits = model(ids)
    if fired["n"] == 0:
        raise _not_fired(hook)
    return logits


def evaluate_sae(sae: SAE, model, corpus, *, hook: str | None = None, n_tokens: int = 100_000,
                 ce_tokens: int | None = None, context_size: int = 128, batch_size: int = 16,
                 exclude_first: bool = True, dense_threshold: float = 0.1,
                 skip_contexts: int = 0, text_column: str = "text",
                 progress: bool | None = None) -> SAEEvaluation:
    """Evaluate ``sae`` at its hook of ``model`` on held-out text (see the module docstring).

    Parameters
    ----------
    sae : SAE
    model : TransformerBridge
    corpus : texts, path, datasets.Dataset or token-id sequences
    hook : str, optional
        Default: ``sae.hook_name``.
    n_tokens : int
        Evaluation tokens for the reconstruction metrics.
    ce_tokens : int, optional
        Tokens for the spliced losses (default ``n_tokens``; a clean pass and three
        replaced ones, resumed after the hook when it is a block's residual output).
    context_size, batch_size, exclude_first, text_column, progress
        As in :func:`~neuroprobe.dictionary.harvest` (use the training harvest's
        ``context_size`` and ``exclude_first``).
    dense_threshold : float
        A feature is dense when it fires on more than this fraction of the tokens.
    skip_contexts : int
        Leave out the first contexts of the corpus (e.g. those used for training).

    Returns
    -------
    SAEEvaluation

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.dictionary import SAE, evaluate_sae
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> sae = SAE(16, 32, "topk", k=4, hook_name="blocks.0.hook_resid_post")
    >>> ev = evaluate_sae(sae, model, [list(range(50)) * 4], n_tokens=150, context_size=16)
    >>> ev.n_tokens, ev.pca_components
    (150, 4)
    """
    from neuroprobe.core.capture import stream
    from neuroprobe.core.probes import RunningCovariance
    from neuroprobe.dictionary.store import _check_context_size

    if not isinstance(sae, SAE):
        raise NeuroprobeError(
            f"evaluate_sae(sae=...) needs an SAE; got {type(sae).__name__}."
        )
    if not hook and not sae.hook_name:
        raise NeuroprobeError("evaluate_sae: the SAE has no hook_name; pass hook=...")
    context_size = _check_context_size(model, context_size)
    n_tokens = check_int(n_tokens, "n_tokens", minimum=1)
    if ce_tokens is not None:
        ce_tokens = check_int(ce_tokens, "ce_tokens", minimum=1)
    batch_size = check_positive_int(batch_size, "batch_size")
    exclude_first = check_bool(exclude_first, "exclude_first")
    dense_threshold = check_real(dense_threshold, "dense_threshold", minimum=0, maximum=1)
    skip_contexts = check_int(skip_contexts, "skip_contexts", minimum=0)
    if progress is not None:
        progress = check_bool(progress, "progress")
    hook = _check_sae_at_hook(model, sae, hook or None)
    per_ctx = context_size - (1 if exclude_first else 0)
    n_ctx = skip_contexts + -(-int(n_tokens) // per_ctx)
    # corpus_contexts counts context_size - 1 tokens per context: ask for n_ctx contexts
    ctxs = corpus_contexts(model, corpus, n_tokens=n_ctx * (context_size - 1),
                           context_size=context_size, text_column=text_column)[skip_contexts:]
    if not ctxs:
        raise NeuroprobeError(
            f"evaluate_sae: the corpus has no context of {context_size} tokens after skipping "
            f"{skip_contexts}; pass more text."
        )
    stats = _ReconStats(sae, hook)
    cov = RunningCovariance(hook)
    stream(model, ctxs, [stats, cov], batch_size=batch_size,
           positions=kept_positions(exclude_first), progress=progress)
    n = stats.n
    mean = stats.sx / n
    tot = float(torch.trace(stats.sxx) - n * (mean @ mean))
    density = (stats.fires / n).numpy()
    l0 = stats.l0 / n
    m = max(1, min(sae.d_in, int(round(l0))))
    evals, evecs = torch.linalg.eigh(cov.covariance)
    evals, evecs = evals.flip(0), evecs.flip(1)
    U = evecs[:, :m].float()
    pca_fvu = float(1 - evals[:m].sum() / evals.sum())
    # PCA mse/cosine from a second look at the first contexts (cheap: stops at the layer)
    mu = mean.float()

    def pca(x: Tensor) -> Tensor:
        xc = x.float() - mu.to(x.device)
        return (xc @ U.to(x.device)) @ U.to(x.device).T + mu.to(x.device)

    pc = _PCAStats(pca, hook)
    stream(model, ctxs, [pc], batch_size=batch_size,
           positions=kept_positions(exclude_first), progress=progress)
    ce_n = int(ce_tokens if ce_tokens is not None else n_tokens)
    ce_ctx = ctxs[: max(1, -(-ce_n // per_ctx))]

    def recon(x: Tensor) -> Tensor:
        return sae(x)

    sp = spliced_losses(model, ce_ctx, hook,
                        {"sae": recon, "zero": lambda x: torch.zeros_like(x), "pca": pca},
                        first_position=1 if exclude_first else 0,
                        batch_size=max(1, batch_size // 2))
    return SAEEvaluation(
        hook=hook, architecture=sae.architecture, d_in=sae.d_in, d_sae=sae.d_sae, n_tokens=n,
        l0=l0, fvu=stats.sse / tot, mse=stats.sse / (n * sae.d_in), cosine=stats.cos / n,
        l2_ratio=stats.l2r / n, dead_fraction=float((density == 0).mean()),
        dense_fraction=float((density > dense_threshold).mean()), feature_density=density,
        pca_eigenvalues=evals.double().numpy().copy(), pca_components=m, pca_fvu=pca_fvu,
        pca_mse=pc.sse / (pc.n * sae.d_in), pca_cosine=pc.cos / pc.n,
        pca_l2_ratio=pc.l2r / pc.n, n_ce_tokens=sp["n_tokens"], ce_clean=sp["ce"]["clean"],
        ce_sae=sp["ce"]["sae"], ce_zero=sp["ce"]["zero"], ce_pca=sp["ce"]["pca"],
        kl_sae=sp["kl"]["sae"], kl_pca=sp["kl"]["pca"])


class _PCAStats:
    def __init__(self, fn, hook: str):
        self.fn, self.hooks = fn, [hook]
        self.n, self.sse, self.cos, self.l2r = 0, 0.0, 0.0, 0.0

    def update(self, acts, meta) -> None:
        x = acts[self.hooks[0]].detach().double().cpu()
        xh = self.fn(x.float()).double()
        self.n += x.shape[0]
        sse, cos, l2r = _error_sums(x, xh)
        self.sse, self.cos, self.l2r = self.sse + sse, self.cos + cos, self.l2r + l2r

    def merge(self, other):  # pragma: no cover
        raise NeuroprobeError("evaluation statistics are not merged.")
