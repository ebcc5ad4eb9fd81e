"""Feature dashboards: self-contained offline HTML for SAE features.

Per feature: its top activating contexts with per-token highlighting, a histogram of its
non-zero activations (inline SVG), the output tokens its decoder direction boosts and
suppresses most through the unembedding (``W_dec[i] @ W_U``), and the minimal activating
example (:func:`neuroprobe.prune_to_mae`) of its top context -- or, when that cannot be
computed, a line saying so and why (and a :class:`~neuroprobe.NeuroprobeWarning`).  One page
per feature and a browser page over all of them; no script, font or image is fetched from
anywhere.

Position 0 of every context (BOS, the attention sink) is left out of the activations by
default; ``exclude_first=False`` keeps it.  The SAE may be on another device or in another
dtype than the model.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_bool,
    check_index_list,
    check_int,
    check_positive_int,
    warn_degenerate,
)
from neuroprobe.dictionary.store import corpus_contexts, kept_positions

__all__ = ["FeatureCard", "FeatureDashboard", "feature_dashboard"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222;max-width:70em}
h1{font-size:1.3em} h2{font-size:1.05em;margin:1.4em 0 .3em}
.ctx{font-family:ui-monospace,monospace;font-size:.82em;line-height:1.7;margin:.15em 0;
white-space:pre-wrap;border-bottom:1px solid #eee}
.t{border-radius:2px;padding:0 1px}
.val{color:#888;font-size:.8em;margin-right:.6em}
.cols{display:flex;gap:2em;flex-wrap:wrap}
table{border-collapse:collapse;font-size:.85em} td{padding:1px 6px}
.pos{color:#1a7f37} .neg{color:#b3261e}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.mae{font-family:ui-monospace,monospace;background:#f6f8fa;padding:.3em .5em}
.mae-error{color:#b3261e}
"""


@dataclass(frozen=True)
class FeatureCard:
    """What the dashboard shows for one feature.

    Attributes
    ----------
    feature : int
        The feature's number in the SAE.
    density : float
        Fraction of the tokens it fires on.
    max_activation : float
    contexts : list of (list of str, list of float)
        Top activating contexts: their tokens and the feature's activation at each.
    histogram : (counts, edges)
        Histogram of the non-zero activations.
    boosted, suppressed : list of (str, float)
        Output tokens with the largest / smallest ``W_dec[feature] @ W_U``, with that value.
    mae_text : str or None
        The minimal activating example of the top context (None: not computed).
    mae_activation : float or None
        The feature's activation at the MAE's anchor.
    mae_error : str or None
        Why the MAE could not be computed (None when it was, or was not asked for).

    Examples
    --------
    >>> from neuroprobe.dictionary import FeatureCard
    >>> card = FeatureCard(3, 0.01, 2.5, [(["a", " cat"], [0.0, 2.5])], ([1, 2], [0.5, 1.5, 2.5]),
    ...                    [(" dog", 1.2)], [(" the", -0.8)], "a cat", 2.4)
    >>> page = card.html()
    >>> page.startswith("<!doctype html>"), "Minimal activating example (activation 2.400)" in page
    (True, True)
    >>> "<td>+1.200</td>" in card.html(standalone=False)
    True
    """

    feature: int
    density: float
    max_activation: float
    contexts: list = field(repr=False)  # [(tokens: list[str], acts: list[float])]
    histogram: tuple = field(repr=False)  # (counts, edges)
    boosted: list = field(repr=False)  # [(token, logit)]
    suppressed: list = field(repr=False)
    mae_text: str | None = None
    mae_activation: float | None = None
    mae_error: str | None = None

    def html(self, standalone: bool = True) -> str:
        """HTML of this feature.

        Parameters
        ----------
        standalone : bool
            A whole self-contained page (default), or a fragment for the browser page.

        Returns
        -------
        str
        """
        ctx = "\n".join(_context_html(t, a, self.max_activation) for t, a in self.contexts)
        rows = lambda xs, cls: "".join(  # noqa: E731
            f"<tr><td class='{cls}'>{html.escape(repr(t))}</td><td>{v:+.3f}</td></tr>"
            for t, v in xs)
        mae = ""
        if self.mae_text is not None:
            mae = (f"<h2>Minimal activating example (activation {self.mae_activation:.3f})</h2>"
                   f"<div class='mae'>{html.escape(self.mae_text)}</div>")
        elif self.mae_error is not None:
            mae = ("<h2>Minimal activating example</h2><p class='mae-error'>The minimal "
                   "activating example could not be computed: "
                   f"{html.escape(self.mae_error)}</p>")
        body = (
            f"<div class='card' id='f{self.feature}'><h1>Feature {self.feature}</h1>"
            f"<p>density {self.density:.2e} &middot; max activation "
            f"{self.max_activation:.3f}</p>"
            f"<div class='cols'><div>{_histogram_svg(*self.histogram)}</div>"
            f"<div><h2>Boosted tokens</h2><table>{rows(self.boosted, 'pos')}</table></div>"
            f"<div><h2>Suppressed tokens</h2><table>{rows(self.suppressed, 'neg')}</table>"
            f"</div></div><h2>Top activating contexts</h2>{ctx}{mae}</div>")
        return _page(f"Feature {self.feature}", body) if standalone else body


@dataclass(frozen=True)
class FeatureDashboard:
    """Cards of several features of one SAE; :meth:`html` is the browser page.

    Attributes
    ----------
    hook : str
        The SAE's hook.
    cards : tuple of FeatureCard
        One per feature, in the order the features were given (drawn ones sorted).

    Examples
    --------
    Built by :func:`feature_dashboard`; a hand-made one:

    >>> from neuroprobe.dictionary import FeatureCard, FeatureDashboard
    >>> card = FeatureCard(3, 0.01, 2.5, [(["a", " cat"], [0.0, 2.5])], ([1], [0.5, 2.5]),
    ...                    [], [])
    >>> dash = FeatureDashboard("blocks.0.hook_resid_post", (card,))
    >>> page = dash.html()
    >>> "<a href='#f3'>3</a>" in page, "Feature 3" in dash._repr_html_()
    (True, True)
    """

    hook: str
    cards: tuple

    def html(self) -> str:
        """The browser page: an index of the features, then every feature's card.

        Returns
        -------
        str
            A self-contained HTML page (no external script, font or image).
        """
        index = " ".join(f"<a href='#f{c.feature}'>{c.feature}</a>" for c in self.cards)
        body = (f"<h1>SAE features at {html.escape(self.hook)}</h1><p>{index}</p>"
                + "".join(c.html(standalone=False) for c in self.cards))
        return _page(f"SAE features at {self.hook}", body)

    def save(self, path) -> Path:
        """Write ``index.html`` and one ``feature_<i>.html`` per card into a folder.

        Parameters
        ----------
        path : str or Path
            The folder (created if missing).

        Returns
        -------
        Path
            The folder.
        """
        from neuroprobe.core.validation import check_writable_path

        p = check_writable_path(path, "path", directory=True)
        (p / "index.html").write_text(self.html(), encoding="utf-8")
        for c in self.cards:
            (p / f"feature_{c.feature}.html").write_text(c.html(), encoding="utf-8")
        return p

    def _repr_html_(self) -> str:
        return "".join(c.html(standalone=False) for c in self.cards[:4])


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body>{body}</body></html>")


def _context_html(tokens: list[str], acts: list[float], vmax: float) -> str:
    spans = []
    for t, a in zip(tokens, acts):
        alpha = 0.0 if vmax <= 0 else max(0.0, min(1.0, a / vmax))
        style = f"background:rgba(255,140,0,{alpha:.2f})" if alpha > 0 else ""
        shown = html.escape(t).replace("\n", "\u21b5\n")  # a visible newline token
        spans.append(f"<span class='t' style='{style}' title='{a:.3f}'>{shown}</span>")
    return f"<div class='ctx'><span class='val'>{max(acts):.2f}</span>{''.join(spans)}</div>"


def _histogram_svg(counts, edges, w: int = 260, h: int = 110) -> str:
    counts = np.asarray(counts, dtype=float)
    if counts.size == 0 or counts.max() == 0:
        return "<p>(never fired)</p>"
    bw = w / counts.size
    bars = "".join(
        f"<rect x='{i * bw:.1f}' y='{h - 15 - (h - 25) * c / counts.max():.1f}' "
        f"width='{bw * 0.9:.1f}' height='{(h - 25) * c / counts.max():.1f}' fill='#4477aa'/>"
        for i, c in enumerate(counts))
    return (f"<h2>Activation histogram (non-zero)</h2><svg width='{w}' height='{h}' "
            f"xmlns='http://www.w3.org/2000/svg'>{bars}<text x='0' y='{h - 2}' "
            f"font-size='10'>{edges[0]:.2f}</text><text x='{w - 30}' y='{h - 2}' "
            f"font-size='10'>{edges[-1]:.2f}</text></svg>")


def feature_dashboard(model, sae, corpus, *, features=None, n_features: int = 16,
                      n_tokens: int = 20_000, context_size: int = 128, skip_contexts: int = 0,
                      n_top: int = 8, n_logits: int = 8, window: int = 24, mae: bool = True,
                      batch_size: int = 16, seed: int = 0, text_column: str = "text",
                      exclude_first: bool = True) -> FeatureDashboard:
    """Build dashboards for SAE features over held-out text.

    Parameters
    ----------
    model : TransformerBridge
    sae : SAE
        At one of ``model``'s hooks (its ``hook_name``); it may be on another device or in
        another dtype than the model.
    corpus : texts, path, datasets.Dataset or token-id sequences
    features : list of int, optional
        Features to show; default ``n_features`` alive features drawn with ``seed``.
    n_features : int
        How many features to draw when ``features`` is not given.
    n_tokens, context_size, skip_contexts
        The text the activations are taken over.
    n_top : int
        Top contexts per feature (each shown as ``window`` tokens ending a few after the max).
    n_logits : int
        Boosted and suppressed tokens shown.
    window : int
        Tokens shown per top context.
    mae : bool
        Also prune each feature's top context to its minimal activating example.  When that
        fails for a feature, its card says so and why, and a ``NeuroprobeWarning`` names the
        feature and the reason.
    batch_size : int
        Contexts per forward pass.
    seed : int
        Draws the features when ``features`` is not given.
    text_column : str
        The text column of a ``datasets.Dataset`` or ``.jsonl`` corpus.
    exclude_first : bool
        Leave position 0 of every context (BOS, the attention sink) out of the activations
        (default).  ``False`` keeps it.

    Returns
    -------
    FeatureDashboard

    Examples
    --------
    >>> import neuroprobe as npb
    >>> from neuroprobe.dictionary import SAE, feature_dashboard
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=32, act_fn="relu", seed=0))
    >>> sae = SAE(16, 32, "topk", k=4, hook_name="blocks.0.hook_resid_post")
    >>> dash = feature_dashboard(model, sae, [list(range(50)) * 4], features=[0, 1],
    ...                          n_tokens=150, context_size=16, mae=False)
    >>> "<html>" in dash.html(), len(dash.cards)
    (True, 2)
    """
    from neuroprobe.core.capture import record
    from neuroprobe.dictionary.sae import _check_sae_at_hook
    from neuroprobe.dictionary.store import _check_context_size

    context_size = _check_context_size(model, context_size)
    hook = _check_sae_at_hook(model, sae, None)
    if features is not None:
        features = check_index_list(features, "features", size=sae.d_sae,
                                    what="feature number")
    n_features = check_positive_int(n_features, "n_features")
    n_tokens = check_positive_int(n_tokens, "n_tokens")
    skip_contexts = check_int(skip_contexts, "skip_contexts", minimum=0)
    n_top = check_positive_int(n_top, "n_top")
    d_vocab = getattr(model.cfg, "d_vocab", None)
    n_logits = check_int(n_logits, "n_logits", minimum=1,
                         maximum=None if d_vocab is None else int(d_vocab))
    window = check_positive_int(window, "window")
    mae = check_bool(mae, "mae")
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_int(seed, "seed", minimum=0)
    exclude_first = check_bool(exclude_first, "exclude_first")
    first = 1 if exclude_first else 0
    positions = kept_positions(exclude_first)
    per = context_size - first
    need = skip_contexts + -(-int(n_tokens) // per)
    # corpus_contexts counts context_size - 1 kept tokens per context: ask for `need` contexts
    ctxs = corpus_contexts(model, corpus, n_tokens=need * (context_size - 1),
                           context_size=context_size, text_column=text_column)[skip_contexts:]
    if not ctxs:
        raise NeuroprobeError("feature_dashboard: the corpus has no context; pass more text.")
    feats_all = sae.features()
    if features is None:
        rec = record(model, ctxs, hooks=[feats_all], positions=positions,
                     batch_size=batch_size)
        alive = np.flatnonzero((rec.acts > 0).any(0).numpy())
        if alive.size == 0:
            warn_degenerate(
                f"feature_dashboard: none of the SAE's {sae.d_sae} features fires on the "
                f"{len(ctxs)} context(s) (all dead here); the dashboard is empty. Pass more "
                "text, or check the SAE is for this model and hook.")
        elif alive.size < n_features:
            warn_degenerate(
                f"feature_dashboard: only {alive.size} of the SAE's {sae.d_sae} features fire "
                f"on this text; showing {alive.size}, not n_features={n_features}.")
        rng = np.random.default_rng(seed)
        features = np.sort(rng.choice(alive, size=min(n_features, alive.size), replace=False))
        acts_all = rec.acts[:, torch.as_tensor(features)]
    else:
        features = np.asarray(features, dtype=np.int64)
        rec = record(model, ctxs, hooks=[sae.features(features)], positions=positions,
                     batch_size=batch_size)
        acts_all = rec.acts
    A = acts_all.detach().float().cpu().reshape(len(ctxs), per, -1).numpy()
    toks = np.asarray(ctxs)[:, first:]
    strs = _token_strings(model, toks)
    logit_dirs = _logit_effects(model, sae, features)
    cards = []
    for j, f in enumerate(features):
        a = A[:, :, j]
        best = a.max(1)
        top = np.argsort(-best, kind="stable")[:n_top]
        top = top[best[top] > 0]
        contexts = []
        for c in top:
            p = int(a[c].argmax())
            lo, hi = max(0, p - window + 4), min(per, p + 4)
            contexts.append(([strs[c][i] for i in range(lo, hi)], a[c, lo:hi].tolist()))
        nz = a[a > 0]
        hist = np.histogram(nz, bins=30) if nz.size else (np.zeros(0), np.zeros(1))
        boosted, suppressed = logit_dirs(j, n_logits)
        mae_text = mae_act = mae_error = None
        if mae and top.size:
            from neuroprobe.mae.prune import prune_to_mae

            c = int(top[0])
            tok = getattr(model, "tokenizer", None)
            try:
                if tok is not None:  # the text without the BOS corpus_contexts put first
                    bos = getattr(tok, "bos_token_id", None)
                    text = tok.decode(ctxs[c][1:] if bos is not None else ctxs[c])
                else:
                    text = list(ctxs[c])
                m = prune_to_mae(model, (feats_all, int(f)), text)
                mae_text = tok.decode(m.token_ids) if tok is not None else str(m.token_ids)
                mae_act = float(m.activation)
            except NeuroprobeError as e:
                mae_error = str(e)
                warn_degenerate(
                    f"feature_dashboard: the minimal activating example of feature {int(f)} "
                    f"could not be computed ({mae_error}); its card says so instead.")
        cards.append(FeatureCard(int(f), float((a > 0).mean()), float(a.max()), contexts,
                                 hist, boosted, suppressed, mae_text, mae_act, mae_error))
    return FeatureDashboard(hook, tuple(cards))


def _token_strings(model, toks: np.ndarray) -> list[list[str]]:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [[f"<{int(t)}>" for t in row] for row in toks]
    vocab = tok.convert_ids_to_tokens(list(range(int(toks.max()) + 1)))
    fix = lambda s: s.replace("Ġ", " ").replace("Ċ", "\n")  # noqa: E731  (byte-level BPE)
    return [[fix(vocab[int(t)]) for t in row] for row in toks]


def _logit_effects(model, sae, features):
    W_U = getattr(model, "W_U", None)
    if W_U is None:
        return lambda j, n: ([], [])
    with torch.no_grad():  # both on the CPU in float32, wherever the SAE and the model are
        rows = sae.W_dec.detach()[torch.as_tensor(features, dtype=torch.long,
                                                  device=sae.W_dec.device)]
        eff = rows.float().cpu() @ W_U.detach().float().cpu()  # only the features' rows move
    tok = getattr(model, "tokenizer", None)

    def name(i: int) -> str:
        return tok.decode([i]) if tok is not None else f"<{i}>"

    def get(j: int, n: int):
        e = eff[j]
        up = torch.topk(e, n).indices.tolist()
        down = torch.topk(-e, n).indices.tolist()
        return [(name(i), float(e[i])) for i in up], [(name(i), float(e[i])) for i in down]

    return get
