"""Comparing bases at one hook by how interpretable their units are (Klindt, Sanborn et al.).

Candidate bases, each with the same number of units: ``neurons`` (the hook's coordinates),
``pca``, ``ica``, ``nmf`` (on the activations shifted to be non-negative), ``kmeans``
(centroid directions), ``random`` (Gaussian directions) and ``sae`` (an SAE's features).
Directional units are unit vectors applied to the centred activations, their sign chosen
so that the heavier tail is positive; SAE units are the encoder's output.

Score, with no language-model judge -- *n-gram predictability* (Neuron2Graph style, scored
with the OpenAI automated-interpretability convention ``ev_correlation_score``): the
evaluation contexts are split in two halves.  On half A each unit's top-``n_top`` contexts
give a lookup from the n-grams ending at their maximum token to that activation: the token
itself and up to ``NGRAM_CONTEXT`` (3) tokens of context before it, i.e. 1- to 4-grams
that end at the activating token (an n-gram never reaches back past the first kept token
of its context).  A key seen in several top contexts keeps the highest activation.  On
half B the lookup predicts the activation of every token of the unit's top-``n_top``
contexts plus ``n_random`` random contexts (the longest n-gram ending at that token that
is in the lookup, else 0), and the score is the Pearson correlation of predicted and true
activations pooled over those tokens.

Second score -- *coherence* of a unit's top contexts against random contexts: on half B,
each of the unit's top-``n_top`` contexts is embedded by the model itself and the score is
the mean pairwise cosine similarity of those embeddings minus the mean pairwise cosine
similarity of random embeddings of the same kind (a constant per comparison, estimated on
256 random draws from half B; a mean over distinct pairs, so it does not depend on the
number of contexts).  ``coherence_embedding="tokens"`` (default) embeds a context by the mean
of the token embeddings ``W_E`` over the ``coherence_window`` tokens ending at the unit's
maximum (centred by the mean embedding of half B's tokens): it is independent of the hook
and of the basis.  ``"resid"`` embeds a context by the mean of the hooked activations over
all its tokens (centred and scaled per coordinate by half B's context means): topical
rather than lexical, and slightly circular (the maximum token is one of the averaged rows).

Both scores are averaged over units with bootstrap 95% CIs over units.

Position 0 of every context (the BOS / attention-sink position) is left out of the
activations, the bases' fits and both scores by default; ``exclude_first=False`` keeps it.
An SAE may live on another device or in another dtype than the model: it is applied where
its weights are and its output is brought back to the CPU in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_bool,
    check_int,
    check_name_list,
    check_positive_int,
)
from neuroprobe.dictionary.store import corpus_contexts, kept_positions

__all__ = ["BasesComparison", "compare_bases", "BASES"]

BASES = ("neurons", "pca", "ica", "nmf", "kmeans", "random", "sae")
#: Tokens of context before the activating token in the predictability lookup's n-grams.
NGRAM_CONTEXT = 3


@dataclass(frozen=True)
class BasesComparison:
    """Per-unit predictability and coherence scores of several bases at one hook.

    Attributes
    ----------
    hook : str
    n_units : int
    scores : DataFrame
        One row per unit: ``basis``, ``unit``, ``score`` (n-gram predictability) and
        ``coherence`` (NaN for a unit that never varies).
    summary : DataFrame
        One row per basis: ``score`` (mean predictability over units), ``ci_low``,
        ``ci_high`` (bootstrap 95%), ``n_scored``; ``coherence``, ``coherence_ci_low``,
        ``coherence_ci_high``, ``n_coherence``; sorted best first by ``score``.
    n_tokens : int
    seed : int
    coherence_embedding : str
        ``"tokens"`` or ``"resid"`` (see the module docstring).
    coherence_baseline : float
        Mean pairwise cosine of random embeddings, subtracted from every unit's coherence.
    exclude_first : bool
        Whether position 0 of every context was left out (the default).

    Examples
    --------
    Built by :func:`compare_bases`; a hand-made one shows the accessors:

    >>> import pandas as pd
    >>> from neuroprobe.dictionary import BasesComparison
    >>> scores = pd.DataFrame({"basis": ["pca", "pca", "neurons", "neurons"],
    ...                        "unit": [0, 1, 0, 1], "score": [0.5, 0.7, 0.2, 0.4],
    ...                        "coherence": [0.1, 0.3, 0.0, 0.2]})
    >>> summary = pd.DataFrame({"score": [0.6, 0.3], "ci_low": [0.5, 0.2],
    ...                         "ci_high": [0.7, 0.4], "n_scored": [2, 2]},
    ...                        index=pd.Index(["pca", "neurons"], name="basis"))
    >>> cmp = BasesComparison("blocks.0.hook_resid_post", 2, scores, summary, 100, 0)
    >>> cmp.best
    'pca'
    >>> cmp.to_dict()["neurons"]["score"]
    0.3
    >>> list(cmp.to_dataframe().index)
    ['pca', 'neurons']
    """

    hook: str
    n_units: int
    scores: pd.DataFrame
    summary: pd.DataFrame
    n_tokens: int
    seed: int
    coherence_embedding: str = "tokens"
    coherence_baseline: float = float("nan")
    exclude_first: bool = True

    @property
    def best(self) -> str:
        """The basis with the highest mean score."""
        return str(self.summary.index[0])

    def to_dataframe(self) -> pd.DataFrame:
        """The per-basis summary (a copy of :attr:`summary`), best basis first.

        Returns
        -------
        DataFrame
            Indexed by basis, with ``score``, ``ci_low``, ``ci_high``, ``n_scored``,
            ``coherence``, ``coherence_ci_low``, ``coherence_ci_high`` and ``n_coherence``.
        """
        return self.summary.copy()

    def to_dict(self) -> dict:
        """``{basis: {score, ci_low, ci_high, n_scored, coherence, coherence_ci_low,
        coherence_ci_high, n_coherence}}``."""
        return {b: {k: float(v) for k, v in row.items()}
                for b, row in self.summary.iterrows()}

    def plot(self, ax=None, metric: str = "score"):
        """Bars with bootstrap 95% CIs of ``metric`` per basis.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw (default: a new figure).
        metric : {"score", "coherence"}
            n-gram predictability or the coherence of the top contexts.

        Returns
        -------
        matplotlib Axes
        """
        import matplotlib.pyplot as plt

        from neuroprobe.core.validation import check_choice

        metric = check_choice(metric, "BasesComparison.plot(metric=...)",
                              ("score", "coherence"))
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        s = self.summary.iloc[::-1]
        lo, hi = ("ci_low", "ci_high") if metric == "score" else (
            "coherence_ci_low", "coherence_ci_high")
        v = s[metric]
        ax.barh(s.index, v, xerr=[(v - s[lo]).fillna(0), (s[hi] - v).fillna(0)],
                color="#4477aa" if metric == "score" else "#228833", capsize=3)
        ax.set_xlabel("n-gram predictability (Pearson r, mean over units)" if metric == "score"
                      else f"coherence of top contexts ({self.coherence_embedding}; "
                      "cosine minus random)")
        ax.set_title(f"{self.n_units} units per basis at {self.hook}", fontsize=9)
        return ax

    def __repr__(self) -> str:
        rows = ", ".join(f"{b}={r.score:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] "
                         f"coh={r.coherence:.3f}" for b, r in self.summary.iterrows())
        return f"BasesComparison({self.hook}, n_units={self.n_units}: {rows})"


def compare_bases(model, corpus, *, hook: str, sae=None, n_units: int = 576,
                  n_tokens: int = 40_000, context_size: int = 128, skip_contexts: int = 0,
                  bases: tuple[str, ...] | None = None, n_top: int = 20, n_random: int = 20,
                  n_boot: int = 1000, batch_size: int = 16, seed: int = 0,
                  text_column: str = "text", coherence_embedding: str = "tokens",
                  coherence_window: int = 3, exclude_first: bool = True) -> BasesComparison:
    """Score bases at ``hook`` by n-gram predictability and by the coherence of their units'
    top contexts (see the module docstring).

    Parameters
    ----------
    model : TransformerBridge
    corpus : texts, path, datasets.Dataset or token-id sequences
    hook : str
    sae : SAE, optional
        Needed for the ``"sae"`` basis (its first ``n_units`` features by firing rate on
        half A, dead ones skipped).  It may be on another device or in another dtype than
        the model (e.g. on CUDA from ``train_sae_on_store``).
    n_units : int
        Units per basis (at most the hook's width for neurons / PCA / ICA).
    n_tokens : int
        Evaluation tokens (position 0 of each context left out unless
        ``exclude_first=False``).
    context_size, skip_contexts : int
        Tokens per context (BOS included), and contexts of the corpus skipped first (e.g.
        those an SAE was trained on).
    bases : tuple of str, optional
        Default: all of ``BASES`` (``"sae"`` only when ``sae`` is given).
    n_top, n_random : int
        Top and random contexts per unit.
    n_boot : int
        Bootstrap resamples of the units for the 95% CIs.
    batch_size : int
        Contexts per forward pass.
    seed : int
        Fixes the split, the random contexts, the bases' fits and the bootstrap.
    text_column : str
        The text column of a ``datasets.Dataset`` or ``.jsonl`` corpus.
    coherence_embedding : {"tokens", "resid"}
        How a context is embedded for the coherence score: the mean token embedding of the
        window ending at the unit's maximum, or the mean hooked activation over the context.
    coherence_window : int
        Tokens in that window (``"tokens"`` only).
    exclude_first : bool
        Leave position 0 of every context (BOS, the attention sink) out of the activations,
        the fits and the scores (default).  ``False`` keeps it.

    Returns
    -------
    BasesComparison

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.dictionary import compare_bases
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> corpus = [[(i * i + s) % 50 for i in range(400)] for s in range(4)]
    >>> cmp = compare_bases(model, corpus, hook="blocks.0.hook_resid_post", n_units=8,
    ...                     n_tokens=1500, context_size=16, bases=("neurons", "pca"),
    ...                     n_top=5, n_random=5, n_boot=50)
    >>> sorted(cmp.to_dict())
    ['neurons', 'pca']
    >>> sorted(cmp.scores.columns)
    ['basis', 'coherence', 'score', 'unit']
    """
    from neuroprobe.core.capture import record
    from neuroprobe.dictionary.store import _check_context_size, _check_model

    _check_model(model)
    bases = tuple(check_name_list(bases, "bases", what="basis")) if bases is not None else tuple(
        b for b in BASES if b != "sae" or sae is not None)
    unknown = [b for b in bases if b not in BASES]
    if unknown:
        raise NeuroprobeError(f"compare_bases(bases=...) has unknown {unknown}; use {BASES}.")
    if len(set(bases)) != len(bases):
        raise NeuroprobeError(f"compare_bases(bases={bases!r}) repeats a basis; pass each once.")
    if not isinstance(hook, str):
        raise NeuroprobeError(f"hook must be one hook name (str); got {hook!r}.")
    n_units = check_positive_int(n_units, "n_units")
    n_tokens = check_positive_int(n_tokens, "n_tokens")
    context_size = _check_context_size(model, context_size)
    skip_contexts = check_int(skip_contexts, "skip_contexts", minimum=0)
    n_top = check_positive_int(n_top, "n_top")
    n_random = check_positive_int(n_random, "n_random")
    n_boot = check_positive_int(n_boot, "n_boot")
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_int(seed, "seed", minimum=0)
    exclude_first = check_bool(exclude_first, "exclude_first")
    if "sae" in bases and sae is None:
        raise NeuroprobeError("compare_bases: the 'sae' basis needs sae=...")
    if "sae" in bases:
        from neuroprobe.dictionary.sae import _check_sae_at_hook

        _check_sae_at_hook(model, sae, hook)
    else:
        from neuroprobe.core.hooks import resolve_hooks

        resolve_hooks(model, [hook], argname="hook")
    first = 1 if exclude_first else 0
    per = context_size - first
    need = skip_contexts + -(-int(n_tokens) // per)
    # corpus_contexts counts context_size - 1 kept tokens per context: ask for `need` contexts
    ctxs = corpus_contexts(model, corpus, n_tokens=need * (context_size - 1),
                           context_size=context_size, text_column=text_column)[skip_contexts:]
    if len(ctxs) < 2 * (n_top + n_random // 2 + 1):
        raise NeuroprobeError(
            f"compare_bases has {len(ctxs)} contexts; it needs at least "
            f"{2 * (n_top + n_random // 2 + 1)} (two halves of top + random contexts). Pass "
            "more text or a larger n_tokens."
        )
    rec = record(model, ctxs, hooks=[hook], positions=kept_positions(exclude_first),
                 batch_size=batch_size)
    X = rec.acts.detach().float().cpu()
    toks = torch.as_tensor(ctxs)[:, first:].numpy()  # [n_ctx, per]
    n_ctx = toks.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_ctx)
    half_a, half_b = np.sort(order[: n_ctx // 2]), np.sort(order[n_ctx // 2:])
    rows_a = (half_a[:, None] * per + np.arange(per)).reshape(-1)
    XA = X[torch.as_tensor(rows_a)]
    keys = _ngram_keys(toks)
    rand_b = np.sort(rng.choice(half_b, size=min(n_random, len(half_b)), replace=False))
    coh = _Coherence(model, X, toks, half_b, coherence_embedding, coherence_window, seed)
    scores = []
    for b in bases:
        acts = _unit_activations(b, X, XA, n_units, sae, seed)  # [T, n] numpy float32
        A = acts.reshape(n_ctx, per, -1)
        for u in range(A.shape[2]):
            scores.append((b, u, _predictability(A[:, :, u], keys, half_a, half_b, rand_b,
                                                 n_top), coh.score(A[:, :, u], n_top)))
    df = pd.DataFrame(scores, columns=["basis", "unit", "score", "coherence"])
    summary = _summary(df, n_boot, seed)
    return BasesComparison(hook, int(n_units), df, summary, int(X.shape[0]), int(seed),
                           coh.mode, coh.baseline, exclude_first)


def _ngram_keys(toks: np.ndarray, max_context: int = NGRAM_CONTEXT) -> np.ndarray:
    """``[max_context + 1, n_ctx, per]`` int64 keys: row ``n`` holds the id of the n-gram of
    ``n + 1`` tokens ending at each token (the token and the ``n`` tokens before it), -1 where
    the context has fewer tokens before it.

    Ids are dense (``numpy.unique`` over each order's n-grams, so no vocabulary size can
    overflow int64) and distinct across orders, so one lookup table holds every order.
    """
    t = np.asarray(toks, dtype=np.int64)
    n_ctx, per = t.shape
    out = np.full((max_context + 1, n_ctx, per), -1, dtype=np.int64)
    offset = 0
    for n in range(min(max_context + 1, per)):
        # the (n + 1)-gram ending at position p >= n is t[:, p - n : p + 1]
        grams = np.stack([t[:, j: per - n + j] for j in range(n + 1)], axis=-1)
        _, inv = np.unique(grams.reshape(-1, n + 1), axis=0, return_inverse=True)
        inv = np.asarray(inv, dtype=np.int64).reshape(n_ctx, per - n)
        out[n, :, n:] = inv + offset
        offset += int(inv.max()) + 1
    return out


def _predictability(a: np.ndarray, keys: np.ndarray, half_a, half_b, rand_b, n_top) -> float:
    best_a = a[half_a].max(1)
    top_a = half_a[np.argsort(-best_a, kind="stable")[:n_top]]
    pos = a[top_a].argmax(1)
    table: dict[int, float] = {}
    for c, p in zip(top_a, pos):
        v = float(a[c, p])
        for n in range(keys.shape[0]):
            k = int(keys[n, c, p])
            if k >= 0 and v > table.get(k, -np.inf):
                table[k] = v
    best_b = a[half_b].max(1)
    top_b = half_b[np.argsort(-best_b, kind="stable")[:n_top]]
    ctx = np.unique(np.concatenate([top_b, rand_b]))
    true = a[ctx].reshape(-1)
    if true.std() == 0:
        return float("nan")
    kk = np.array(sorted(table), dtype=np.int64)
    vv = np.array([table[k] for k in kk], dtype=np.float64)
    pred = np.zeros(true.shape[0])
    found = np.zeros(true.shape[0], dtype=bool)
    for n in range(keys.shape[0] - 1, -1, -1):  # longest n-gram first
        q = keys[n, ctx].reshape(-1)
        i = np.clip(np.searchsorted(kk, q), 0, len(kk) - 1)
        hit = (kk[i] == q) & ~found & (q >= 0)
        pred[hit] = vv[i[hit]]
        found |= hit
    if pred.std() == 0:
        return 0.0
    return float(np.corrcoef(pred, true)[0, 1])


class _Coherence:
    """The coherence score's embedding space and random baseline (see the module docstring).

    ``score(a, n_top)`` for one unit's activations ``a [n_ctx, per]``: the mean pairwise
    cosine of the embeddings of its top-``n_top`` contexts of half B minus ``baseline``.
    """

    n_baseline = 256

    def __init__(self, model, X: torch.Tensor, toks: np.ndarray, half_b: np.ndarray,
                 mode: str, window: int, seed: int):
        from neuroprobe.core.validation import check_choice, check_int

        self.mode = check_choice(mode, "compare_bases(coherence_embedding=...)",
                                 ("tokens", "resid"))
        self.window = check_int(window, "compare_bases(coherence_window=...)", minimum=1)
        self.toks = toks
        self.half_b = half_b
        n_ctx, per = toks.shape
        rng = np.random.default_rng([int(seed), 13])  # apart from the split's generator
        if self.mode == "tokens":
            W_E = getattr(model, "W_E", None)
            if W_E is None:
                raise NeuroprobeError(
                    "compare_bases(coherence_embedding='tokens') needs the model's token "
                    f"embedding W_E; {type(model).__name__} has none. Pass "
                    "coherence_embedding='resid'."
                )
            self.W_E = W_E.detach().float().cpu().numpy().astype(np.float64)
            counts = np.bincount(toks[half_b].reshape(-1),
                                 minlength=self.W_E.shape[0])[: self.W_E.shape[0]]
            self.mu = counts @ self.W_E / max(counts.sum(), 1)
            c = rng.choice(half_b, size=self.n_baseline, replace=True)
            p = rng.integers(0, per, size=self.n_baseline)
            base = self._embed(c, p)
        else:
            ctx_mean = X.double().reshape(n_ctx, per, -1).mean(1).numpy()
            ref = ctx_mean[half_b]
            # centred and scaled per coordinate: a few high-variance coordinates (massive
            # activations) would otherwise decide every cosine
            self.ctx_emb = (ctx_mean - ref.mean(0)) / np.maximum(ref.std(0), 1e-12)
            c = rng.choice(half_b, size=min(self.n_baseline, len(half_b)), replace=False)
            base = self.ctx_emb[c]
        self.baseline = _mean_pairwise_cosine(base)

    def _embed(self, c: np.ndarray, p: np.ndarray) -> np.ndarray:
        if self.mode == "resid":
            return self.ctx_emb[c]
        pos = p[:, None] - np.arange(self.window)[::-1][None, :]  # [n, w], ending at p
        ok = pos >= 0
        t = self.toks[c[:, None], np.clip(pos, 0, None)]
        e = (self.W_E[t] - self.mu) * ok[:, :, None]
        return e.sum(1) / ok.sum(1, keepdims=True)

    def score(self, a: np.ndarray, n_top: int) -> float:
        ab = a[self.half_b]
        if n_top < 2 or ab.std() == 0:
            return float("nan")
        top = self.half_b[np.argsort(-ab.max(1), kind="stable")[:n_top]]
        pos = a[top].argmax(1)
        return _mean_pairwise_cosine(self._embed(top, pos)) - self.baseline


def _mean_pairwise_cosine(E: np.ndarray) -> float:
    """Mean cosine similarity over distinct pairs of rows (a zero row counts as 0)."""
    n = E.shape[0]
    if n < 2:
        return float("nan")
    U = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    G = U @ U.T
    return float((G.sum() - np.trace(G)) / (n * (n - 1)))


def _unit_activations(basis: str, X: torch.Tensor, XA: torch.Tensor, n: int, sae,
                      seed: int) -> np.ndarray:
    d = X.shape[1]
    if basis == "sae":
        # the SAE may sit on another device / in another dtype (encode moves its input there):
        # everything it returns comes back to the CPU in float32 before numpy sees it
        with torch.no_grad():
            fa = (sae.encode(XA) > 0).float().mean(0).cpu()
        alive = torch.nonzero(fa > 0).flatten()
        if alive.numel() == 0:
            raise NeuroprobeError(
                f"compare_bases: none of the SAE's {sae.d_sae} features fires on half A of "
                "the text; the 'sae' basis has no unit to score. Check the SAE is for this "
                "hook, or pass more text."
            )
        if alive.numel() < n:
            from neuroprobe.core.validation import warn_degenerate

            warn_degenerate(
                f"compare_bases: only {alive.numel()} of the SAE's features fire on half A; "
                f"the 'sae' basis scores {alive.numel()} units, not n_units={n}.",
                stacklevel=4)
        pick = alive[torch.argsort(-fa[alive], stable=True)][:n]

        def picked(chunk: torch.Tensor) -> torch.Tensor:  # only the picked features move
            f = sae.encode(chunk)
            return f[:, pick.to(f.device)].float().cpu()

        with torch.no_grad():
            return torch.cat([picked(X[i:i + 8192])
                              for i in range(0, X.shape[0], 8192)]).numpy()
    if basis in ("neurons", "pca", "ica") and n > d:
        raise NeuroprobeError(
            f"compare_bases(n_units={n}) exceeds the hook's width {d} for the {basis!r} basis."
        )
    mu = XA.mean(0)
    Xc = (X - mu).numpy()
    XAc = (XA - mu).numpy().astype(np.float64)
    fit = XAc[np.random.default_rng(seed).permutation(XAc.shape[0])[:8000]]
    if basis == "neurons":
        W = np.eye(d)[:n]
    elif basis == "pca":
        _, _, vt = np.linalg.svd(fit, full_matrices=False)
        W = vt[:n]
    elif basis == "ica":
        from sklearn.decomposition import FastICA

        ica = FastICA(n_components=n, random_state=seed, max_iter=300, tol=1e-3,
                      whiten="unit-variance")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ica.fit(fit)
        W = ica.components_
    elif basis == "nmf":
        from sklearn.decomposition import NMF

        shift = fit - fit.min(0)
        nmf = NMF(n_components=n, init="nndsvda", random_state=seed, max_iter=100)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nmf.fit(shift)
        W = nmf.components_
    elif basis == "kmeans":
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=n, random_state=seed, n_init=1, batch_size=2048)
        km.fit(fit)
        W = km.cluster_centers_
    else:  # random
        W = np.random.default_rng(seed).standard_normal((n, d))
    W = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    acts = Xc @ W.T.astype(np.float32)
    # sign: heavier tail positive (third moment)
    skew = ((acts - acts.mean(0)) ** 3).mean(0)
    return acts * np.where(skew < 0, -1.0, 1.0).astype(np.float32)


def _summary(df: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    # one generator per metric: adding the coherence column left the predictability CIs
    # exactly as they were for a seed
    rng = np.random.default_rng(seed)
    rng_coh = np.random.default_rng([int(seed), 17])
    rows = []
    for b, g in df.groupby("basis", sort=False):
        rows.append((b, *_boot_mean(g.score.dropna().to_numpy(), n_boot, rng),
                     *_boot_mean(g.coherence.dropna().to_numpy(), n_boot, rng_coh)))
    out = pd.DataFrame(rows, columns=["basis", "score", "ci_low", "ci_high", "n_scored",
                                      "coherence", "coherence_ci_low", "coherence_ci_high",
                                      "n_coherence"])
    return out.set_index("basis").sort_values("score", ascending=False)


def _boot_mean(s: np.ndarray, n_boot: int, rng) -> tuple:
    """Mean, bootstrap 95% CI over units, count (NaNs and 0 for no scored unit)."""
    if s.size == 0:
        return np.nan, np.nan, np.nan, 0
    boots = s[rng.integers(0, s.size, size=(n_boot, s.size))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return s.mean(), lo, hi, s.size
