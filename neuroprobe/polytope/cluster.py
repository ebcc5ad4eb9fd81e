"""HDBSCAN clusters of activations and spline codes, and NMF directions against them.

The polytope lens finds monosemantic regions by clustering activations or their spline
codes with HDBSCAN (prediction 1), and compares them with NMF directions: a direction is
polysemantic when the samples most aligned with it fall into several clusters.

:func:`hdbscan_clusters` routes the work for speed:

``"precomputed"`` (codes, up to ``max_precomputed`` points)
    all-pairs Hamming/Jaccard distances from blockwise integer matrix products
    (:func:`~neuroprobe.hamming_matrix`), core distances by ``np.partition`` along rows, the
    mutual-reachability matrix in place, then hdbscan's own MST, linkage and cluster
    selection -- identical labels to ``hdbscan.HDBSCAN(metric="precomputed")`` on the same
    distances, several times faster.
``"pca"`` (dense activations)
    project on the top ``pca_components`` principal components (covariance eigendecomposition)
    and run hdbscan's Boruvka KD-tree (the hdbscan maintainers' advice for high-dimensional
    data).
``"knn"`` (codes beyond ``max_precomputed`` points)
    a sparse symmetric k-nearest-neighbour graph of Hamming/Jaccard distances, given to
    hdbscan as a sparse precomputed matrix (disconnected parts are joined at a distance
    larger than any code distance, so they only merge at the root).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.units import Directions
from neuroprobe.core.validation import (
    as_tensor,
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_positive_int,
    warn_degenerate,
)
from neuroprobe.polytope.spline import (
    ProbabilisticCodes,
    SplineCodes,
    expected_hamming_matrix,
    gram_blocks,
    hamming_matrix,
    jaccard_matrix,
)

__all__ = [
    "Clusters",
    "DirectionOverlap",
    "hdbscan_clusters",
    "nmf_directions",
    "direction_cluster_overlap",
]

_ROUTES = ("auto", "precomputed", "pca", "knn")


@dataclass(frozen=True, eq=False)
class Clusters:
    """HDBSCAN clustering of ``n`` points.

    Attributes
    ----------
    labels : ndarray ``int [n]``
        Cluster of each point, ``-1`` for noise.
    probabilities : ndarray ``[n]``
        HDBSCAN membership strength of each point in its cluster.
    route : str
        How it was computed (``"precomputed"``, ``"pca"``, ``"knn"``).
    metric : str
    min_cluster_size : int

    Examples
    --------
    >>> import numpy as np
    >>> x = np.concatenate([np.zeros((30, 5)), np.ones((30, 5)) * 10])
    >>> x = x + np.random.default_rng(0).normal(size=x.shape)
    >>> c = hdbscan_clusters(x, min_cluster_size=10)
    >>> c.n_clusters, c.sizes.tolist()
    (2, [30, 30])
    """

    labels: np.ndarray
    probabilities: np.ndarray
    route: str
    metric: str
    min_cluster_size: int

    def __repr__(self) -> str:
        return (f"Clusters(n={len(self.labels)}, n_clusters={self.n_clusters}, "
                f"noise={self.noise_fraction:.2f}, route={self.route!r}, "
                f"metric={self.metric!r})")

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max() + 1) if len(self.labels) else 0

    @property
    def sizes(self) -> np.ndarray:
        """Number of points per cluster ``[n_clusters]``."""
        return np.bincount(self.labels[self.labels >= 0], minlength=self.n_clusters)

    @property
    def noise_fraction(self) -> float:
        return float((self.labels < 0).mean()) if len(self.labels) else 0.0

    def ari(self, reference) -> float:
        """Adjusted Rand index against reference labels (noise counted as its own label)."""
        from sklearn.metrics import adjusted_rand_score

        if isinstance(reference, Clusters):
            reference = reference.labels
        if isinstance(reference, (str, bytes)) or not hasattr(reference, "__len__"):
            raise NeuroprobeError(
                f"reference must be a 1-D sequence of labels, one per point; got "
                f"{type(reference).__name__} {reference!r:.40}."
            )
        ref = np.asarray(reference)
        if ref.ndim != 1:
            raise NeuroprobeError(f"reference must be 1-D; got shape {ref.shape}.")
        if len(ref) != len(self.labels):
            raise NeuroprobeError(
                f"reference must have one label per point ({len(self.labels)}); got {len(ref)}."
            )
        return float(adjusted_rand_score(ref, self.labels))

    def summary(self, examples: Sequence | None = None, k: int = 5) -> pd.DataFrame:
        """One row per cluster: ``cluster``, ``size``, ``top`` (indices of the ``k`` most
        confident members) and, with ``examples`` (texts or any per-point objects),
        ``examples`` (those members)."""
        k = check_positive_int(k, "k")
        if examples is not None and (isinstance(examples, (str, bytes))
                                     or not hasattr(examples, "__len__")):
            raise NeuroprobeError(
                f"examples must be a sequence with one entry per point (e.g. the texts); got "
                f"{type(examples).__name__}."
            )
        if examples is not None and len(examples) != len(self.labels):
            raise NeuroprobeError(
                f"examples must have one entry per point ({len(self.labels)}); got "
                f"{len(examples)}."
            )
        rows = []
        for c in range(self.n_clusters):
            idx = np.nonzero(self.labels == c)[0]
            top = idx[np.argsort(-self.probabilities[idx], kind="stable")[:k]]
            row = {"cluster": c, "size": len(idx), "top": top.tolist()}
            if examples is not None:
                row["examples"] = [examples[i] for i in top]
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame({"point": np.arange(len(self.labels)), "label": self.labels,
                             "probability": self.probabilities})


# ------------------------------------------------------------------------------------------
# routes
# ------------------------------------------------------------------------------------------
def _labels_from_distances(D: np.ndarray, min_cluster_size, min_samples, selection,
                           allow_single_cluster):
    """hdbscan's generic algorithm on a dense distance matrix, with a faster front end."""
    from hdbscan._hdbscan_linkage import label, mst_linkage_core
    from hdbscan.hdbscan_ import _tree_to_labels

    n = D.shape[0]
    k = min(n - 1, min_samples)
    core = np.partition(D, k, axis=1)[:, k].astype(np.float64)  # D is symmetric
    mr = np.empty(D.shape, dtype=np.float64)
    np.maximum(D, core[None, :], out=mr)
    np.maximum(mr, core[:, None], out=mr)
    mst = mst_linkage_core(mr)
    del mr
    mst = mst[np.argsort(mst.T[2], kind="stable"), :]
    slt = label(mst)
    labels, probs, *_ = _tree_to_labels(
        None, slt, min_cluster_size, selection, allow_single_cluster
    )
    return labels, probs


def _knn_graph(codes: SplineCodes, n_neighbors: int, metric: str, block_size: int = 2048):
    """Sparse symmetric kNN graph of code distances, one row block in memory at a time."""
    from scipy.sparse import csr_matrix

    n = len(codes)
    na = codes.n_active.astype(np.float32)
    kk = min(n_neighbors, n - 1)
    out_r, out_c, out_v = [], [], []

    def flush(i0, parts):
        d = np.concatenate(parts, axis=1)
        r = np.arange(d.shape[0])
        d[r, r + i0] = np.inf
        nn = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        out_r.append(np.repeat(r + i0, kk))
        out_c.append(nn.ravel())
        # tiny offset: scipy's sparse matrices drop explicit zeros (identical codes)
        out_v.append(np.take_along_axis(d, nn, 1).ravel() + 1e-6)

    cur, parts = None, []
    for i0, i1, j0, j1, g in gram_blocks(codes, codes, block_size):  # row-major order
        if cur is not None and i0 != cur:
            flush(cur, parts)
            parts = []
        cur = i0
        g = g.astype(np.float32)
        union = na[i0:i1, None] + na[None, j0:j1] - g
        if metric == "hamming":
            d = union - g
        else:
            d = np.where(union > 0, 1.0 - g / np.maximum(union, 1), 0.0).astype(np.float32)
        parts.append(d)
    flush(cur, parts)
    g = csr_matrix((np.concatenate(out_v), (np.concatenate(out_r), np.concatenate(out_c))),
                   shape=(n, n))
    return g.maximum(g.T).tocsr()


def _pca(x: Tensor, n_components: int) -> np.ndarray:
    """Scores on the top principal components: randomized SVD (seeded) for wide data,
    covariance eigendecomposition otherwise."""
    xc = x.float() - x.float().mean(0)
    if xc.shape[1] > 4 * n_components and xc.shape[0] > 4 * n_components:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            u, s, _ = torch.svd_lowrank(xc, q=n_components + 10, niter=4)
        return (u[:, :n_components] * s[:n_components]).double().numpy()
    xd = xc.double()
    _, vecs = torch.linalg.eigh(xd.T @ xd)
    return (xd @ vecs[:, -n_components:].flip(1)).numpy()


def hdbscan_clusters(
    x,
    *,
    min_cluster_size: int = 20,
    min_samples: int | None = None,
    metric: str = "auto",
    route: str = "auto",
    pca_components: int = 10,
    max_precomputed: int = 20000,
    n_neighbors: int = 30,
    cluster_selection_method: str = "eom",
    allow_single_cluster: bool = False,
) -> Clusters:
    """HDBSCAN clusters of spline codes or activations, routed for speed.

    Parameters
    ----------
    x : SplineCodes, ProbabilisticCodes, Tensor ``[n, d]``, ndarray or Recording
        Codes (clustered by Hamming or Jaccard distance; probabilistic codes by expected
        Hamming distance) or dense activations (Euclidean).
    min_cluster_size, min_samples : int
        HDBSCAN's parameters (``min_samples`` defaults to ``min_cluster_size``).
    metric : {"auto", "hamming", "jaccard", "euclidean"}
        ``"auto"``: Hamming for codes, Euclidean for activations.
    route : {"auto", "precomputed", "pca", "knn"}
        ``"auto"``: codes -> ``"precomputed"`` up to ``max_precomputed`` points, then
        ``"knn"``; activations -> ``"pca"`` (to ``pca_components`` dimensions when wider).
        Activations can also take ``"precomputed"`` (exact Euclidean distances).

    Returns
    -------
    Clusters

    Examples
    --------
    >>> import torch, neuroprobe as npb
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.cat([torch.randn(30, 2, generator=g) * 0.1,
    ...                torch.randn(30, 2, generator=g) * 0.1 + 5])
    >>> cl = npb.hdbscan_clusters(x, min_cluster_size=10)
    >>> sorted(set(cl.labels.tolist())), (cl.labels[:30] == cl.labels[0]).all().item()
    ([0, 1], True)
    """
    check_positive_int(min_cluster_size, "min_cluster_size", minimum=2)
    min_samples = min_cluster_size if min_samples is None else check_positive_int(
        min_samples, "min_samples")
    if route not in _ROUTES:
        raise NeuroprobeError(f"route must be one of {_ROUTES}; got {route!r}.")
    # hdbscan's / scikit-learn's own parameters, checked here so that their raw errors never
    # reach the user
    cluster_selection_method = check_choice(cluster_selection_method,
                                            "cluster_selection_method", ("eom", "leaf"))
    allow_single_cluster = check_bool(allow_single_cluster, "allow_single_cluster")
    pca_components = check_positive_int(pca_components, "pca_components")
    max_precomputed = check_int(max_precomputed, "max_precomputed", minimum=0)
    n_neighbors = check_positive_int(n_neighbors, "n_neighbors", minimum=2)
    if not isinstance(metric, str):
        raise NeuroprobeError(f"metric must be a str; got {type(metric).__name__} {metric!r}.")
    hdb = _HDBSCAN(int(min_cluster_size), min_samples, cluster_selection_method,
                   allow_single_cluster)
    if isinstance(x, ProbabilisticCodes):
        return _soft_codes_route(x, metric, route, hdb)
    is_codes = isinstance(x, SplineCodes)
    points = x if is_codes else _dense_points(x)
    metric = _check_metric(metric, is_codes)
    n = len(points)
    if n >= max(min_cluster_size, 2) and n <= min_samples:
        raise NeuroprobeError(
            f"x has {n} points but min_samples={min_samples} needs more than that many "
            "neighbours for a core point; pass a smaller min_samples or more points."
        )
    if n < max(min_cluster_size, 2) or n <= min_samples:
        raise NeuroprobeError(
            f"x has {n} points, fewer than min_cluster_size={min_cluster_size} (and "
            f"min_samples={min_samples} needs more than that many): no cluster can form. "
            "Pass more points or a smaller min_cluster_size."
        )
    if n and (is_codes and bool((points.packed == points.packed[:1]).all())
              or not is_codes and bool((points == points[:1]).all())):
        warn_degenerate(
            f"hdbscan_clusters: all {n} points are identical ({'codes' if is_codes else 'rows'}"
            " of x are equal), so there is no structure to cluster: expect one cluster or all "
            "noise."
        )
    route = _choose_route(route, is_codes, n, max_precomputed)
    if route == "precomputed":
        labels, probs = _precomputed_route(points, metric, hdb)
    elif route == "pca":
        labels, probs = _pca_route(points, pca_components, hdb)
    else:
        labels, probs = _knn_route(points, metric, n_neighbors, hdb)
    return Clusters(np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64),
                    route, metric, hdb.min_cluster_size)


# ---- checks and the choice of route ---------------------------------------------------------
@dataclass(frozen=True)
class _HDBSCAN:
    """HDBSCAN's own parameters, the same on every route."""

    min_cluster_size: int
    min_samples: int
    selection: str
    allow_single_cluster: bool

    def fit(self, data, **route_options) -> tuple[np.ndarray, np.ndarray]:
        """``hdbscan.HDBSCAN(...).fit(data)``: ``(labels, probabilities)``."""
        import hdbscan

        cl = hdbscan.HDBSCAN(min_cluster_size=self.min_cluster_size,
                             min_samples=self.min_samples, **route_options,
                             cluster_selection_method=self.selection,
                             allow_single_cluster=self.allow_single_cluster).fit(data)
        return cl.labels_, cl.probabilities_


def _dense_points(x) -> Tensor:
    """Activations as a finite floating ``[n, d]`` tensor."""
    xt = as_tensor(x, "x", ndim=2)
    if xt.is_complex():
        raise NeuroprobeError(f"x is complex ({xt.dtype}); pass real activations.")
    if xt.shape[1] == 0:
        raise NeuroprobeError(f"x has 0 columns (shape {tuple(xt.shape)}); pass activations "
                              "of at least one unit.")
    if not xt.is_floating_point():
        xt = xt.float()
    check_finite(xt, "x", axis_name="unit")
    return xt


def _check_metric(metric: str, is_codes: bool) -> str:
    """``"auto"`` resolved (Hamming for codes, Euclidean for activations) and checked."""
    if metric == "auto":
        metric = "hamming" if is_codes else "euclidean"
    allowed = ("hamming", "jaccard") if is_codes else ("euclidean",)
    if metric not in allowed:
        raise NeuroprobeError(
            f"metric={metric!r} does not fit {'spline codes' if is_codes else 'activations'}; "
            f"use one of {allowed}."
        )
    return metric


def _choose_route(route: str, is_codes: bool, n: int, max_precomputed: int) -> str:
    """``"auto"`` resolved: codes -> precomputed up to ``max_precomputed`` points, then kNN;
    activations -> PCA.  A route that does not fit the data is refused."""
    if route == "auto":
        route = ("precomputed" if n <= max_precomputed else "knn") if is_codes else "pca"
    if route == "pca" and is_codes:
        raise NeuroprobeError("route='pca' is for dense activations; codes use "
                              "'precomputed' or 'knn'.")
    if route == "knn" and not is_codes:
        raise NeuroprobeError("route='knn' is implemented for spline codes; use 'pca' for "
                              "activations.")
    return route


# ---- the routes -----------------------------------------------------------------------------
def _soft_codes_route(x: ProbabilisticCodes, metric: str, route: str,
                      hdb: _HDBSCAN) -> Clusters:
    """Probabilistic codes: the expected Hamming matrix, on the precomputed route."""
    if metric not in ("auto", "expected_hamming") or route not in ("auto", "precomputed"):
        raise NeuroprobeError(
            "probabilistic codes are clustered by expected Hamming distance on the "
            "precomputed route; leave metric and route at 'auto'."
        )
    n = len(x)
    if n < max(hdb.min_cluster_size, 2) or n <= hdb.min_samples:
        raise NeuroprobeError(
            f"x has {n} points, fewer than min_cluster_size={hdb.min_cluster_size}: no "
            "cluster can form. Pass more points or a smaller min_cluster_size."
        )
    D = expected_hamming_matrix(x).astype(np.float32)
    np.fill_diagonal(D, 0.0)  # a soft code's expected distance to itself is not 0
    labels, probs = _labels_from_distances(D, hdb.min_cluster_size, hdb.min_samples,
                                           hdb.selection, hdb.allow_single_cluster)
    return Clusters(np.asarray(labels, dtype=np.int64), np.asarray(probs),
                    "precomputed", "expected_hamming", hdb.min_cluster_size)


def _precomputed_route(points, metric: str, hdb: _HDBSCAN):
    """All-pairs distances (code distances from blockwise integer products, or exact
    Euclidean ones), then hdbscan's generic algorithm with a faster front end."""
    if isinstance(points, SplineCodes):
        D = hamming_matrix(points) if metric == "hamming" else jaccard_matrix(points)
    else:
        xd = points.double()
        sq = (xd * xd).sum(1)
        D = (sq[:, None] + sq[None] - 2 * xd @ xd.T).clamp(min=0).sqrt().float().numpy()
        np.fill_diagonal(D, 0.0)
    return _labels_from_distances(D, hdb.min_cluster_size, hdb.min_samples, hdb.selection,
                                  hdb.allow_single_cluster)


def _pca_route(points: Tensor, pca_components: int, hdb: _HDBSCAN):
    """Dense activations on their top principal components, then hdbscan's Boruvka KD-tree."""
    z = (_pca(points, pca_components) if points.shape[1] > pca_components
         else points.double().numpy())
    return hdb.fit(z, algorithm="boruvka_kdtree", core_dist_n_jobs=1)


def _knn_route(codes: SplineCodes, metric: str, n_neighbors: int, hdb: _HDBSCAN):
    """Codes beyond ``max_precomputed`` points: a sparse symmetric kNN graph of code
    distances as a sparse precomputed matrix; disconnected parts are joined at a distance
    larger than any code distance, so they merge only at the root."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    check_positive_int(n_neighbors, "n_neighbors", minimum=2)
    g = _knn_graph(codes, max(n_neighbors, hdb.min_samples + 1), metric)
    ncomp, comp = connected_components(g, directed=False, return_labels=True)
    if ncomp > 1:
        # join the parts with edges longer than any code distance: the hierarchy inside
        # each part is unchanged, the parts merge only at the root
        far = float(codes.n_bits + 1 if metric == "hamming" else 2.0)
        first = np.array([np.argmax(comp == c) for c in range(ncomp)])
        link = csr_matrix((np.full(ncomp - 1, far), (first[:-1], first[1:])), shape=g.shape)
        g = g.maximum(link).maximum(link.T).tocsr()
    return hdb.fit(g, metric="precomputed")


# ------------------------------------------------------------------------------------------
# NMF directions vs clusters
# ------------------------------------------------------------------------------------------
def nmf_directions(
    x,
    n_components: int = 64,
    *,
    hook: str | None = None,
    nonnegative: str = "clip",
    max_iter: int = 300,
    seed: int = 0,
) -> Directions:
    """NMF directions of activations (scikit-learn), as unit-norm :class:`Directions`.

    NMF needs non-negative data: ``nonnegative="clip"`` sets negative values to 0 (SiLU/GELU
    outputs are almost non-negative), ``"shift"`` subtracts each unit's minimum.

    Examples
    --------
    >>> import torch
    >>> d = nmf_directions(torch.rand(50, 6), 3, hook="blocks.0.mlp.hook_post")
    >>> d.vectors.shape, round(float(d.vectors.norm(dim=1)[0]), 5)
    (torch.Size([3, 6]), 1.0)
    """
    from sklearn.decomposition import NMF

    xt = _dense_points(x).double()
    check_positive_int(n_components, "n_components")
    if n_components > min(xt.shape):
        raise NeuroprobeError(
            f"n_components={n_components} is more than min(n_samples, n_units) = "
            f"{min(xt.shape)} of x (shape {tuple(xt.shape)}); NMF's nndsvda start needs "
            f"n_components <= {min(xt.shape)}."
        )
    check_positive_int(max_iter, "max_iter")
    seed = check_int(seed, "seed", minimum=0, maximum=2**32 - 1)
    if hook is not None and not isinstance(hook, str):
        raise NeuroprobeError(f"hook must be a str or None; got {type(hook).__name__} {hook!r}.")
    nonnegative = check_choice(nonnegative, "nonnegative", ("clip", "shift"))
    if hook is None:
        units = getattr(x, "units", None)
        hooks = list(dict.fromkeys(units.hooks)) if units is not None else []
        hook = hooks[0] if len(hooks) == 1 else "activations"
    if nonnegative == "clip":
        xn = xt.clamp(min=0)
    elif nonnegative == "shift":
        xn = xt - xt.min(0).values
    if not bool((xn > 0).any()):
        raise NeuroprobeError(
            f"x is all zero after nonnegative={nonnegative!r} (it has no positive value"
            f"{' ' if nonnegative == 'clip' else ' above each unit minimum '}to factorise); "
            + ("use nonnegative='shift' for activations that are mostly negative."
               if nonnegative == "clip" else "the activations are constant.")
        )
    model = NMF(n_components=n_components, init="nndsvda", max_iter=max_iter,
                random_state=seed)
    model.fit(xn.numpy())
    h = torch.from_numpy(model.components_).float()
    h = h / h.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return Directions(hook, h, name="nmf")


@dataclass(frozen=True, eq=False)
class DirectionOverlap:
    """How the samples most aligned with each direction spread over clusters.

    Attributes
    ----------
    cosine : ndarray ``[n, k]``
        Cosine similarity of every sample with every direction.
    labels : ndarray ``[n]``
        Cluster labels (``-1`` noise).
    table : DataFrame
        Per direction: ``direction``, ``n_clusters`` (distinct clusters among the ``top``
        samples, noise excluded), ``purity`` (fraction of the clustered top samples in the
        largest cluster), ``entropy_bits``, ``noise_fraction``, ``top_clusters``.
    top : int
    """

    cosine: np.ndarray
    labels: np.ndarray
    table: pd.DataFrame
    top: int

    def __repr__(self) -> str:
        return (f"DirectionOverlap(n={self.cosine.shape[0]}, directions={self.cosine.shape[1]},"
                f" top={self.top})")

    def to_dataframe(self) -> pd.DataFrame:
        return self.table.copy()

    @property
    def polysemantic_fraction(self) -> float:
        """Fraction of directions whose top samples span two or more clusters."""
        return float((self.table["n_clusters"] >= 2).mean())


def direction_cluster_overlap(
    x,
    directions: Directions | Float[Tensor, "k d"],
    labels,
    *,
    top: int = 50,
) -> DirectionOverlap:
    """Cosine similarity of samples with directions, and the clusters of the top samples.

    Prediction 1 of the polytope lens: a polysemantic direction overlaps several monosemantic
    clusters.  For each direction the ``top`` most aligned samples are taken and their
    cluster labels counted.

    Examples
    --------
    >>> import numpy as np, torch
    >>> x = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.1, 0.8]])
    >>> o = direction_cluster_overlap(x, torch.eye(2), np.array([0, 0, 1, 1]), top=2)
    >>> o.table["n_clusters"].tolist(), o.table["purity"].tolist()
    ([1, 1], [1.0, 1.0])
    """
    xt = _dense_points(x).double()
    v = directions.vectors if isinstance(directions, Directions) else as_tensor(
        directions, "directions", ndim=2)
    v = v.double()
    check_finite(v, "directions", axis_name="direction")
    zero = torch.nonzero(v.norm(dim=1) == 0).flatten()
    if zero.numel():
        raise NeuroprobeError(
            f"directions {zero[:5].tolist()} are zero vectors: a cosine with them is undefined; "
            "drop them."
        )
    top = check_positive_int(top, "top")
    if isinstance(labels, Clusters):
        labels = labels.labels
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise NeuroprobeError(
            f"labels must be integer cluster labels, one per sample (e.g. Clusters.labels); "
            f"got {type(labels).__name__} {labels!r:.40}."
        )
    if v.shape[1] != xt.shape[1]:
        raise NeuroprobeError(
            f"directions have width {v.shape[1]}, activations have {xt.shape[1]} units; they "
            "must come from the same hook."
        )
    lab = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels)
    if lab.ndim != 1 or (lab.size and lab.dtype.kind not in "iu"):
        raise NeuroprobeError(
            f"labels must be 1-D integer cluster labels (-1 for noise), e.g. Clusters.labels; "
            f"got shape {lab.shape}, dtype {lab.dtype}."
        )
    if len(lab) != xt.shape[0]:
        raise NeuroprobeError(
            f"labels must have one entry per sample ({xt.shape[0]}); got {len(lab)}."
        )
    cos = (xt / xt.norm(dim=1, keepdim=True).clamp(min=1e-12)) @ (
        v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)).T
    cos = cos.numpy()
    top = min(int(top), xt.shape[0])
    rows = []
    for k in range(cos.shape[1]):
        idx = np.argsort(-cos[:, k], kind="stable")[:top]
        lk = lab[idx]
        cl = lk[lk >= 0]
        if len(cl):
            u, c = np.unique(cl, return_counts=True)
            p = c / c.sum()
            order = np.argsort(-c, kind="stable")
            rows.append({"direction": k, "n_clusters": len(u), "purity": float(p.max()),
                         "entropy_bits": float(-(p * np.log2(p)).sum()),
                         "noise_fraction": float((lk < 0).mean()),
                         "top_clusters": u[order][:5].tolist()})
        else:
            rows.append({"direction": k, "n_clusters": 0, "purity": float("nan"),
                         "entropy_bits": float("nan"), "noise_fraction": 1.0,
                         "top_clusters": []})
    return DirectionOverlap(cos, lab, pd.DataFrame(rows), top)
