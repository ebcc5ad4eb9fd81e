"""neuroprobe: neuroscience methods for neural-network interpretability.

Functional networks from block designs and mass-univariate GLMs, minimal activating
examples, spline codes and polytope densities, eigenspectra and random projections, sparse
autoencoders and their features as units -- all on TransformerLens hooks.

>>> import neuroprobe as npb
>>> all(hasattr(npb, name) for name in npb.__all__)
True
>>> {"load_model", "record", "fit_glm", "prune_to_mae", "eigenspectrum"} <= set(npb.__all__)
True
"""

import sys as _sys

from neuroprobe import core, dictionary, glm, mae, networks, polytope, spectrum, testbeds
from neuroprobe.core import *  # noqa: F401,F403
from neuroprobe.dictionary import *  # noqa: F401,F403
from neuroprobe.glm import *  # noqa: F401,F403
from neuroprobe.mae import *  # noqa: F401,F403
from neuroprobe.networks import *  # noqa: F401,F403
from neuroprobe.polytope import *  # noqa: F401,F403
from neuroprobe.spectrum import *  # noqa: F401,F403
# npb.stream is the distributed layer's entry point: core's stream, or shards on a cluster
from neuroprobe.distributed import (  # noqa: F401
    DaskBackend, SerialBackend, stream, stream_distributed, tree_reduce,
)
from neuroprobe.testbeds import *  # noqa: F401,F403

__version__ = "0.1.0"

# Import paths of the modules that moved into folders (0.1 layout), so that code written
# against them keeps working: ``from neuroprobe.capture import record`` and the like.
_MOVED = {
    "capture": core.capture, "models": core.models, "recording": core.recording,
    "probes": core.probes, "units": core.units, "design": glm.design,
    "stimuli": networks.stimuli, "experiments": networks.experiment, "corpus": mae.corpus,
    "substitute": mae.substitute, "spline": polytope.spline, "cluster": polytope.cluster,
    "toy": testbeds,
}
for _old, _module in _MOVED.items():
    _sys.modules.setdefault(f"neuroprobe.{_old}", _module)

__all__ = [
    # core: models, capture, recordings, probes, units, errors
    "load_model", "OFFLINE_MODELS",
    "record", "record_generation", "stream", "hook_names", "tokenize_prompts", "Recording",
    "Probe", "BatchMeta", "RunningCovariance", "TopK", "Directions", "UnitIndex",
    "Shard", "CorpusShard", "shards", "note_batch", "union_seen",
    "stream_distributed", "tree_reduce", "SerialBackend", "DaskBackend",
    "NeuroprobeError", "NeuroprobeWarning",
    # glm: block designs, mass-univariate fits, contrasts, streaming GLM
    "BlockDesign", "fit_glm", "GLMResult", "ContrastResult", "GLMProbe",
    "glm_predicted", "glm_residuals", "glm_r_square",
    "fixed_effects", "second_level", "paired_second_level",
    # networks: stimuli, sets of units, the functional-networks experiment
    "TASKS", "CONTROL", "PromptSet", "BlockRun", "load_prompts", "load_words", "count_tokens",
    "random_word_controls", "make_runs", "generate_prompts", "toy_tokenizer",
    "FunctionalNetwork", "OverlapMatrix", "TaskPrediction", "dice", "jaccard", "overlap_matrix",
    "consensus", "templates", "shared_core", "predict_task",
    "NETWORK_HOOKS", "MLP_HIDDEN_HOOKS", "FunctionalNetworksResult", "functional_networks",
    # networks: localizers and ablation
    "LocalizerStimuli", "load_localizer", "multiple_demand_stimuli", "LocalizerValues",
    "localizer_values", "localize", "SplitHalf", "split_half_reliability",
    "AblationReference", "ablation_reference", "ablate", "CausalEffect", "causal_effect",
    "Dissociation", "dissociation", "random_networks",
    # mae: corpora, max-activating and minimal activating examples, local search
    "load_default_corpus", "iter_texts", "MAE", "MaxActivatingExamples", "TokenImportance",
    "Trajectory", "max_activating_examples", "prune_to_mae", "token_importance",
    "activation_trajectory", "SpanRequest", "Substituter", "LMHeadSubstituter",
    "MaskedLMSubstituter", "as_substituter", "LocalSearch", "local_search",
    # polytope: spline codes, polytope density, clusters
    "SplineCodes", "ProbabilisticCodes", "SplineCodeProbe", "spline_codes", "probabilistic_codes",
    "preactivation_hooks", "hamming_distance", "jaccard_distance", "hamming_matrix",
    "jaccard_matrix", "expected_hamming", "expected_hamming_matrix", "PathDensity", "ScalingRays",
    "ClassDensity", "path_density", "endpoint_density", "scaling_rays", "class_density",
    "activations", "Clusters", "DirectionOverlap",
    "hdbscan_clusters", "nmf_directions", "direction_cluster_overlap",
    # spectrum: eigenspectra, power laws, random projections
    "Eigenspectrum", "PowerLawFit", "SpectrumProbe", "RandomProjections", "AverageAction",
    "ExplainedVariance",
    "eigenspectrum", "powerlaw_alpha", "alpha_by_layer", "random_projections", "average_action",
    "explained_input_variance", "FIT_PRESETS",
    # dictionary: sparse autoencoders (train, evaluate, load/save), SAE features as units
    "SAE", "SAEFeatures", "ActivationStore", "SAEEvaluation", "harvest", "corpus_contexts",
    "train_sae", "train_sae_on_store", "evaluate_sae", "spliced_losses", "load_sae",
    "save_sae", "load_shakespeare_corpus", "load_bible_corpus", "compare_bases",
    "BasesComparison", "ARCHITECTURES", "FORMATS", "BASES",
    "feature_dashboard", "FeatureDashboard", "FeatureCard",
    # testbeds: small networks, their null networks and stimuli, for experiments and tests
    "MovingDot", "moving_dot", "ReLUMLP", "MLPAutoencoder", "TrainedDigits", "train_digits",
    "train_digits_autoencoder", "load_digits_images", "untrained_copy", "reinitialize_",
]
