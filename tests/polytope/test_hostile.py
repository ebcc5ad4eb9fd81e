"""Hostile inputs to neuroprobe.polytope (issue 16): no raw torch/numpy/hdbscan/sklearn error."""

import numpy as np
import pytest
import torch

from neuroprobe.core.errors import NeuroprobeError, NeuroprobeWarning
from neuroprobe.polytope import (
    SplineCodeProbe,
    class_density,
    direction_cluster_overlap,
    endpoint_density,
    expected_hamming_matrix,
    hamming_matrix,
    hdbscan_clusters,
    nmf_directions,
    path_density,
    probabilistic_codes,
    scaling_rays,
    spline_codes,
)
from neuroprobe.polytope.density import activations, downstream_codes
from neuroprobe.testbeds import ReLUMLP

M = ReLUMLP([4, 8, 8, 3], seed=0)
X = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
Y = np.array([0, 1] * 15)
C5 = spline_codes(torch.randn(5, 10, generator=torch.Generator().manual_seed(1)))
P5 = probabilistic_codes(torch.randn(5, 10, generator=torch.Generator().manual_seed(2)))
_g = torch.Generator().manual_seed(0)
BLOBS = torch.cat([torch.randn(30, 2, generator=_g) * 0.1, torch.randn(30, 2, generator=_g) * 0.1
                   + 5])
CODES60 = spline_codes(torch.randn(60, 16, generator=torch.Generator().manual_seed(3)))
XX = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.1, 0.8]])
LAB = np.array([0, 0, 1, 1])
HOOK_PRE = "blocks.*.mlp.hook_pre"

RAISES = [
    # inputs that do not fit the model: named, not a raw matmul error
    ("sc_wrong_width", lambda: spline_codes(M, torch.randn(5, 3)), "inputs of shape \\(5, 3\\)"),
    ("pc_wrong_width", lambda: probabilistic_codes(M, torch.randn(5, 3)), "do not fit the model"),
    ("sc_unbatched", lambda: spline_codes(M, torch.randn(4)), "inputs must be a batch"),
    ("pd_wrong_width", lambda: path_density(M, "hook_input", torch.randn(2, 3),
                                            torch.randn(2, 3)), "do not fit the model"),
    ("pd_wrong_inputs", lambda: path_density(M, "hook_input", X[:2], X[2:4],
                                             inputs=torch.randn(2, 3)), "inputs of shape"),
    ("sr_wrong_width", lambda: scaling_rays(M, "hook_input", torch.randn(2, 3)),
     "do not fit the model"),
    ("dc_wrong_width", lambda: downstream_codes(M, "hook_input", torch.randn(2, 3)),
     "do not fit the model"),
    # spline-code arguments
    ("sc_hooks_int", lambda: spline_codes(M, X, hooks=5), "hooks must be"),
    ("sc_hooks_empty", lambda: spline_codes(M, X, hooks=[]), "hooks is empty"),
    ("sc_threshold_bool", lambda: spline_codes(torch.randn(3, 4), threshold=True), "threshold"),
    ("sc_threshold_str", lambda: spline_codes(torch.randn(3, 4), threshold="0"), "threshold"),
    ("sc_check_hooks", lambda: spline_codes(M, X, check_hooks="no"), "check_hooks"),
    ("sc_batch_zero", lambda: spline_codes(M, X, batch_size=0), "batch_size"),
    ("sc_batch_float", lambda: spline_codes(M, X, batch_size=1.5), "batch_size"),
    ("sc_spatial_str", lambda: spline_codes(M, X, spatial="ab"), "spatial"),
    ("sc_zero_units", lambda: spline_codes(torch.randn(3, 0)), "0 unit columns"),
    ("sc_complex", lambda: spline_codes(torch.randn(3, 4, dtype=torch.complex64)), "complex"),
    ("pc_temperature_bool", lambda: probabilistic_codes(torch.randn(3, 4), temperature=True),
     "temperature"),
    ("codes_row_out_of_range", lambda: C5[10], "out of range"),
    ("codes_row_float", lambda: C5[1.5], "rows"),
    ("unpack_out_of_range", lambda: C5.unpack([10]), "out of range"),
    ("unpack_float", lambda: C5.unpack([1.5]), "rows must hold integer"),
    ("codes_mask_length", lambda: C5[np.ones(3, bool)], "boolean mask"),
    ("hm_block_bool", lambda: hamming_matrix(C5, block_size=True), "block_size"),
    ("ehm_block_zero", lambda: expected_hamming_matrix(P5, block_size=0), "block_size"),
    ("ehm_block_negative", lambda: expected_hamming_matrix(P5, block_size=-1), "block_size"),
    ("ehm_block_float", lambda: expected_hamming_matrix(P5, block_size=1.5), "block_size"),
    ("probe_hooks_int", lambda: SplineCodeProbe(5), "hooks must be"),
    ("probe_hooks_empty", lambda: SplineCodeProbe([]), "hooks is empty"),
    ("probe_threshold_str", lambda: SplineCodeProbe(["h"], threshold="x"), "threshold"),
    ("probe_threshold_nan", lambda: SplineCodeProbe(["h"], threshold=float("nan")), "threshold"),
    ("probe_merge_other", lambda: SplineCodeProbe(["h"]).merge(5), "other must be"),
    ("probe_merge_threshold", lambda: SplineCodeProbe(["h"]).merge(
        SplineCodeProbe(["h"], threshold=1.0)), "thresholds"),
    # path density: the hook is checked before the inputs= rule
    ("pd_unknown_hook", lambda: path_density(M, "blocks.9.hook_x", X[:2], X[2:4]),
     "hook='blocks.9.hook_x' is not a hook of this model"),
    ("pd_hook_int", lambda: path_density(M, 5, X[:2], X[2:4]), "hook must be a hook name"),
    ("pd_model_int", lambda: path_density(5, "hook_input", X[:2], X[2:4]),
     "model must be a HookedRootModule"),
    ("pd_zero_length", lambda: path_density(M, "hook_input", X[:2], X[:2]), "zero length"),
    ("pd_zero_length_sampled", lambda: path_density(M, "hook_input", X[:2], X[:2],
                                                    method="sampled"), "zero length"),
    ("pd_no_pairs", lambda: path_density(M, "hook_input", X[:0], X[:0]), "start is empty"),
    ("pd_unbatched", lambda: path_density(M, "hook_input", X[0], X[1]), "start must be a batch"),
    ("pd_code_hooks_int", lambda: path_density(M, "hook_input", X[:2], X[2:4], code_hooks=5),
     "code_hooks must be"),
    ("pd_code_hooks_empty", lambda: path_density(M, "hook_input", X[:2], X[2:4],
                                                 code_hooks=[]), "code_hooks is empty"),
    ("pd_position", lambda: path_density(M, "hook_input", X[:2], X[2:4], position=5),
     "position=5"),
    ("pd_batch_zero", lambda: path_density(M, "hook_input", X[:2], X[2:4], batch_size=0),
     "batch_size"),
    # endpoint density
    ("ed_rows_b", lambda: endpoint_density(spline_codes(X[:3]), spline_codes(X[3:6]), X[:3],
                                           X[3:5]), "acts_b has 2 rows but codes_b has 3"),
    ("ed_rows_a", lambda: endpoint_density(spline_codes(X[:3]), spline_codes(X[3:6]), X[:2],
                                           X[3:6]), "acts_a has 2 rows"),
    ("ed_widths", lambda: endpoint_density(spline_codes(X[:3]), spline_codes(X[3:6]), X[:3],
                                           X[3:6, :2]), "different widths"),
    ("ed_nan", lambda: endpoint_density(spline_codes(X[:3]), spline_codes(X[3:6]),
                                        X[:3] * np.nan, X[3:6]), "acts_a contains NaN"),
    # scaling rays, class density, activations
    ("sr_k_inf", lambda: scaling_rays(M, "hook_input", X[:2], k=float("inf")), "k"),
    ("sr_no_inputs", lambda: scaling_rays(M, "hook_input", X[:0]), "inputs is empty"),
    ("sr_batch_zero", lambda: scaling_rays(M, "hook_input", X[:2], batch_size=0), "batch_size"),
    ("cd_labels_str", lambda: class_density(M, X, "ab", ["hook_input"]), "labels must be a 1-D"),
    ("cd_labels_2d", lambda: class_density(M, X, np.zeros((30, 2)), ["hook_input"]),
     "labels must be 1-D"),
    ("cd_hooks_empty", lambda: class_density(M, X, Y, []), "hooks is empty"),
    ("cd_hooks_int", lambda: class_density(M, X, Y, 5), "hooks must be"),
    ("cd_hooks_unknown", lambda: class_density(M, X, Y, ["zzz"]), "not a hook of this model"),
    ("cd_seed_str", lambda: class_density(M, X, Y, ["hook_input"], seed="x"), "seed"),
    ("cd_n_boot_zero", lambda: class_density(M, X, Y, ["hook_input"], n_boot=0), "n_boot"),
    ("cd_n_steps_zero", lambda: class_density(M, X, Y, ["hook_input"], method="sampled",
                                              n_steps=0), "n_steps"),
    ("cd_null_int", lambda: class_density(M, X, Y, ["hook_input"], null_model=5), "null_model"),
    ("cd_identical_inputs", lambda: class_density(M, X[:1].repeat(30, 1), Y, ["hook_input"],
                                                  n_pairs=5, null_model=None),
     "identical activations"),
    ("act_wrong_width", lambda: activations(M, torch.randn(2, 3), "hook_input"),
     "do not fit the model"),
    ("act_position", lambda: activations(M, X, "hook_input", position=9), "position=9"),
    ("act_batch_zero", lambda: activations(M, X, "hook_input", batch_size=0), "batch_size"),
    ("act_inputs_str", lambda: activations(M, "abc", "hook_input"), "inputs must be"),
    ("act_hook_int", lambda: activations(M, X, 5), "hook must be a hook name"),
    # hdbscan / scikit-learn / NMF parameters, checked before the call
    ("hdb_selection", lambda: hdbscan_clusters(BLOBS, min_cluster_size=10,
                                               cluster_selection_method="bogus"),
     "cluster_selection_method"),
    ("hdb_selection_codes", lambda: hdbscan_clusters(CODES60, min_cluster_size=10,
                                                     cluster_selection_method="bogus"),
     "cluster_selection_method"),
    ("hdb_selection_knn", lambda: hdbscan_clusters(CODES60, min_cluster_size=10, route="knn",
                                                   cluster_selection_method="bogus"),
     "cluster_selection_method"),
    ("hdb_selection_soft", lambda: hdbscan_clusters(probabilistic_codes(torch.randn(60, 8)),
                                                    min_cluster_size=10,
                                                    cluster_selection_method="leaves"),
     "cluster_selection_method"),
    ("hdb_pca_zero", lambda: hdbscan_clusters(torch.randn(60, 20), min_cluster_size=10,
                                              pca_components=0), "pca_components"),
    ("hdb_pca_float", lambda: hdbscan_clusters(torch.randn(60, 20), min_cluster_size=10,
                                               pca_components=1.5), "pca_components"),
    ("hdb_single_str", lambda: hdbscan_clusters(BLOBS, min_cluster_size=10,
                                                allow_single_cluster="no"),
     "allow_single_cluster"),
    ("hdb_max_pre_negative", lambda: hdbscan_clusters(CODES60, min_cluster_size=10,
                                                      max_precomputed=-1), "max_precomputed"),
    ("hdb_max_pre_float", lambda: hdbscan_clusters(CODES60, min_cluster_size=10,
                                                   max_precomputed=2.5), "max_precomputed"),
    ("hdb_neighbors_float", lambda: hdbscan_clusters(CODES60, min_cluster_size=10,
                                                     n_neighbors=2.5), "n_neighbors"),
    ("hdb_metric_int", lambda: hdbscan_clusters(BLOBS, min_cluster_size=10, metric=5), "metric"),
    ("hdb_min_samples_big", lambda: hdbscan_clusters(BLOBS, min_cluster_size=10,
                                                     min_samples=60), "min_samples=60"),
    ("hdb_zero_cols", lambda: hdbscan_clusters(torch.randn(60, 0), min_cluster_size=10),
     "0 columns"),
    ("hdb_complex", lambda: hdbscan_clusters(torch.randn(60, 2, dtype=torch.complex64),
                                             min_cluster_size=10), "complex"),
    ("ari_str", lambda: hdbscan_clusters(BLOBS, min_cluster_size=10).ari("abc"), "reference"),
    ("summary_k_zero", lambda: hdbscan_clusters(BLOBS, min_cluster_size=10).summary(k=0), "k"),
    ("summary_examples_str", lambda: hdbscan_clusters(BLOBS, min_cluster_size=10).summary(
        examples="abc"), "examples"),
    ("nmf_too_many", lambda: nmf_directions(torch.rand(50, 6), 10), "n_components=10"),
    ("nmf_max_iter", lambda: nmf_directions(torch.rand(50, 6), 3, max_iter=0), "max_iter"),
    ("nmf_seed_str", lambda: nmf_directions(torch.rand(50, 6), 3, seed="x"), "seed"),
    ("nmf_seed_negative", lambda: nmf_directions(torch.rand(50, 6), 3, seed=-1), "seed"),
    ("nmf_hook_int", lambda: nmf_directions(torch.rand(50, 6), 3, hook=5), "hook"),
    ("nmf_nonnegative", lambda: nmf_directions(torch.rand(50, 6), 3, nonnegative="abs"),
     "nonnegative"),
    ("nmf_all_negative", lambda: nmf_directions(-torch.rand(50, 6), 3), "all zero"),
    ("nmf_zero_cols", lambda: nmf_directions(torch.rand(50, 0), 3), "0 columns"),
    ("dco_top_zero", lambda: direction_cluster_overlap(XX, torch.eye(2), LAB, top=0), "top"),
    ("dco_top_float", lambda: direction_cluster_overlap(XX, torch.eye(2), LAB, top=1.5), "top"),
    ("dco_labels_float", lambda: direction_cluster_overlap(XX, torch.eye(2),
                                                           np.array([0.5, 0, 1, 1])),
     "integer cluster labels"),
    ("dco_labels_str", lambda: direction_cluster_overlap(XX, torch.eye(2), "abcd"), "labels"),
    ("dco_zero_direction", lambda: direction_cluster_overlap(XX, torch.zeros(1, 2), LAB),
     "zero vectors"),
    ("dco_nan_direction", lambda: direction_cluster_overlap(XX, torch.full((1, 2), np.nan),
                                                            LAB), "directions contains NaN"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in RAISES], ids=[c[0] for c in RAISES])
def test_refused(call, match):
    with pytest.raises(NeuroprobeError, match=match):
        call()


@pytest.mark.parametrize("x", [torch.ones(60, 3), spline_codes(torch.ones(60, 3))],
                         ids=["dense", "codes"])
def test_identical_points_warn(x):
    with pytest.warns(NeuroprobeWarning, match="identical"):
        cl = hdbscan_clusters(x, min_cluster_size=10)
    assert cl.n_clusters <= 1


def test_valid_calls_still_work():
    assert spline_codes(torch.randn(3, 4), threshold=np.float32(0.1)).threshold == \
        pytest.approx(0.1)
    assert hamming_matrix(C5, block_size=np.int64(16)).shape == (5, 5)
    assert C5[np.int64(2)].unpack().shape == (1, 10)
    assert C5[[0, 2]].unpack().shape == (2, 10)
    assert C5[np.arange(5) < 2].unpack().shape == (2, 10)
    assert C5.unpack(torch.tensor([1, 3])).shape == (2, 10)
    cl = hdbscan_clusters(BLOBS, min_cluster_size=10)
    assert cl.ari(cl) == 1.0
    o = direction_cluster_overlap(XX, torch.eye(2), torch.tensor(LAB), top=2)
    assert o.table["purity"].tolist() == [1.0, 1.0]
    d = path_density(M, "hook_input", X[:2], X[2:4], inputs=X[:2])
    assert d.crossings.shape == (2,)
    assert activations(M, X, "blocks.0.mlp.hook_post").shape == (30, 8)
    assert spline_codes(M, X, hooks=HOOK_PRE).n_bits == 16


def test_language_model_inputs_checked(smollm2):
    with pytest.raises(NeuroprobeError, match="inputs for a language model must be prompts"):
        spline_codes(smollm2, [1, 2])
    tokens = smollm2.to_tokens(["The cat sat"])
    with pytest.raises(NeuroprobeError, match="position=20 does not fit"):
        activations(smollm2, tokens, "blocks.0.hook_resid_post", position=20)
    assert activations(smollm2, tokens, "blocks.0.hook_resid_post", position=2).shape == (1, 576)
