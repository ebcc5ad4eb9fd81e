"""neuroprobe: neuroscience methods for neural-network interpretability.

Functional networks from block designs and mass-univariate GLMs, minimal activating
examples, spline codes and polytope densities, eigenspectra and random projections --
all on TransformerLens hooks.

>>> import neuroprobe as npb
>>> all(hasattr(npb, name) for name in npb.__all__)
True
>>> {"load_model", "record", "fit_glm", "prune_to_mae", "eigenspectrum"} <= set(npb.__all__)
True
"""

from neuroprobe._errors import NeuroprobeError, NeuroprobeWarning
from neuroprobe.probes import BatchMeta, Probe, RunningCovariance, TopK
from neuroprobe.units import Directions, UnitIndex

# --- one import line per feature module (each module defines its own __all__) ---------
from neuroprobe.capture import hook_names, record, record_generation, stream, tokenize_prompts
from neuroprobe.models import OFFLINE_MODELS, load_model
from neuroprobe.recording import Recording
from neuroprobe.design import *  # noqa: F401,F403
from neuroprobe.glm import *  # noqa: F401,F403
from neuroprobe.stimuli import *  # noqa: F401,F403
from neuroprobe.networks import *  # noqa: F401,F403
from neuroprobe.experiments import *  # noqa: F401,F403
from neuroprobe.corpus import *  # noqa: F401,F403
from neuroprobe.mae import *  # noqa: F401,F403
from neuroprobe.substitute import *  # noqa: F401,F403
from neuroprobe.spline import *  # noqa: F401,F403
from neuroprobe.polytope import *  # noqa: F401,F403
from neuroprobe.cluster import *  # noqa: F401,F403
from neuroprobe.spectrum import *  # noqa: F401,F403
from neuroprobe.toy import *  # noqa: F401,F403

__version__ = "0.1.0"

__all__ = [
    "NeuroprobeError",
    "NeuroprobeWarning",
    "load_model",
    "OFFLINE_MODELS",
    "record",
    "record_generation",
    "stream",
    "hook_names",
    "tokenize_prompts",
    "Recording",
    "BatchMeta",
    "Probe",
    "RunningCovariance",
    "TopK",
    "Directions",
    "UnitIndex",
    # issue 3: design, glm
    "BlockDesign", "fit_glm", "GLMResult", "ContrastResult", "GLMProbe",
    # issue 4: stimuli, networks
    "TASKS", "CONTROL", "PromptSet", "BlockRun", "load_prompts", "load_words", "count_tokens",
    "random_word_controls", "make_runs", "generate_prompts", "toy_tokenizer",
    "FunctionalNetwork", "OverlapMatrix", "TaskPrediction", "dice", "jaccard", "overlap_matrix",
    "consensus", "templates", "shared_core", "predict_task",
    "NETWORK_HOOKS", "MLP_HIDDEN_HOOKS", "FunctionalNetworksResult", "functional_networks",
    # issue 5: corpus, mae, substitute
    "load_default_corpus", "iter_texts", "MAE", "MaxActivatingExamples", "TokenImportance",
    "Trajectory", "max_activating_examples", "prune_to_mae", "token_importance",
    "activation_trajectory", "SpanRequest", "Substituter", "LMHeadSubstituter",
    "MaskedLMSubstituter", "as_substituter", "LocalSearch", "local_search",
    # issue 6: spline, polytope, cluster
    "SplineCodes", "ProbabilisticCodes", "SplineCodeProbe", "spline_codes", "probabilistic_codes",
    "preactivation_hooks", "hamming_distance", "jaccard_distance", "hamming_matrix",
    "jaccard_matrix", "expected_hamming", "expected_hamming_matrix", "PathDensity", "ScalingRays",
    "ClassDensity", "path_density", "endpoint_density", "scaling_rays", "class_density",
    "untrained_copy", "reinitialize_", "activations", "Clusters", "DirectionOverlap",
    "hdbscan_clusters", "nmf_directions", "direction_cluster_overlap",
    # issue 7: spectrum, toy
    "Eigenspectrum", "PowerLawFit", "SpectrumProbe", "RandomProjections", "AverageAction",
    "ExplainedVariance",
    "eigenspectrum", "powerlaw_alpha", "alpha_by_layer", "random_projections", "average_action",
    "explained_input_variance", "FIT_PRESETS", "MovingDot", "moving_dot", "MLPAutoencoder",
    "train_digits_autoencoder", "load_digits_images",
]
