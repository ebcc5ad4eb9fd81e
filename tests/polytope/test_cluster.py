import hdbscan
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import neuroprobe.polytope.cluster as cl
from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.polytope.spline import hamming_matrix, jaccard_matrix, spline_codes


def _planted_codes(n=300, bits=256, k=4, flip=0.1, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((k, bits)) < 0.5
    lab = rng.integers(0, k, n)
    b = protos[lab] ^ (rng.random((n, bits)) < flip)
    return spline_codes(torch.from_numpy(b.astype(np.float32) - 0.5)), lab


@pytest.mark.parametrize("metric", ["hamming", "jaccard"])
def test_precomputed_route_equals_hdbscan(metric):
    codes, lab = _planted_codes()
    res = cl.hdbscan_clusters(codes, min_cluster_size=15, metric=metric)
    assert res.route == "precomputed"
    D = (hamming_matrix(codes) if metric == "hamming" else jaccard_matrix(codes))
    ref = hdbscan.HDBSCAN(min_cluster_size=15, metric="precomputed").fit(D.astype(np.float64))
    assert adjusted_rand_score(ref.labels_, res.labels) == 1.0
    np.testing.assert_allclose(res.probabilities, ref.probabilities_, atol=1e-6)
    assert res.ari(lab) == pytest.approx(1.0)  # planted prototypes recovered


def test_knn_route_recovers_planted_clusters():
    codes, lab = _planted_codes(seed=1)
    res = cl.hdbscan_clusters(codes, min_cluster_size=15, route="knn", n_neighbors=20)
    assert res.route == "knn"
    assert res.ari(lab) > 0.95


def test_dense_routes():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 64)) * 6
    lab = rng.integers(0, 3, 240)
    x = centres[lab] + rng.normal(size=(240, 64))
    pca = cl.hdbscan_clusters(torch.from_numpy(x), min_cluster_size=20)
    assert pca.route == "pca" and pca.ari(lab) == pytest.approx(1.0)
    pre = cl.hdbscan_clusters(x, min_cluster_size=20, route="precomputed")
    from sklearn.metrics import pairwise_distances
    ref = hdbscan.HDBSCAN(min_cluster_size=20, metric="precomputed").fit(
        pairwise_distances(x).astype(np.float64))
    assert adjusted_rand_score(ref.labels_, pre.labels) == 1.0
    s = pre.summary(examples=[f"ex{i}" for i in range(240)], k=3)
    assert s["size"].sum() == (pre.labels >= 0).sum()
    for _, row in s.iterrows():
        assert all(pre.labels[i] == row.cluster for i in row.top)
        assert row.examples == [f"ex{i}" for i in row.top]


def test_bad_inputs():
    codes, _ = _planted_codes(n=10)
    with pytest.raises(NeuroprobeError, match="fewer than min_cluster_size=20"):
        cl.hdbscan_clusters(codes, min_cluster_size=20)
    with pytest.raises(NeuroprobeError, match="metric='euclidean' does not fit spline codes"):
        cl.hdbscan_clusters(codes, min_cluster_size=3, metric="euclidean")
    x = np.ones((30, 4))
    x[3, 1] = np.nan
    with pytest.raises(NeuroprobeError, match="NaN"):
        cl.hdbscan_clusters(x, min_cluster_size=5)
    with pytest.raises(NeuroprobeError, match="route must be one of"):
        cl.hdbscan_clusters(np.ones((30, 4)), route="fast")


def test_nmf_and_overlap():
    rng = np.random.default_rng(3)
    basis = np.abs(rng.normal(size=(2, 20)))
    lab = rng.integers(0, 2, 200)
    x = torch.from_numpy(basis[lab] * rng.uniform(0.5, 2, (200, 1)) +
                         0.01 * np.abs(rng.normal(size=(200, 20))))
    d = cl.nmf_directions(x, 2, hook="h")
    assert d.vectors.shape == (2, 20) and d.name == "nmf"
    o = cl.direction_cluster_overlap(x, d, lab, top=50)
    # each NMF direction aligns with one planted component: its top samples are one cluster
    assert o.table["n_clusters"].tolist() == [1, 1]
    assert o.polysemantic_fraction == 0.0
    # a mixed direction is polysemantic
    mixed = torch.from_numpy(basis.sum(0, keepdims=True))
    o2 = cl.direction_cluster_overlap(x, mixed, lab, top=150)
    assert o2.table["n_clusters"].tolist() == [2]
    ref = (x / x.norm(dim=1, keepdim=True)) @ (mixed / mixed.norm()).T
    np.testing.assert_allclose(o2.cosine, ref.numpy(), rtol=1e-10)
    with pytest.raises(NeuroprobeError, match="same hook"):
        cl.direction_cluster_overlap(x, torch.ones(1, 3), lab)


def test_probabilistic_codes_route():
    from neuroprobe.polytope.spline import probabilistic_codes

    rng = np.random.default_rng(4)
    protos = rng.normal(size=(3, 120)) * 2
    lab = rng.integers(0, 3, 150)
    z = torch.from_numpy(protos[lab] + rng.normal(size=(150, 120)))
    hard = cl.hdbscan_clusters(spline_codes(z), min_cluster_size=15)
    soft = cl.hdbscan_clusters(probabilistic_codes(z, temperature=1e-6), min_cluster_size=15)
    assert soft.metric == "expected_hamming"
    assert adjusted_rand_score(hard.labels, soft.labels) == 1.0
    warm = cl.hdbscan_clusters(probabilistic_codes(z, temperature=1.0), min_cluster_size=15)
    assert warm.ari(lab) > 0.9
