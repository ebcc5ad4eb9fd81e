"""Hostile inputs to the localizer and ablation entry points (issue 16): each refused with a
NeuroprobeError that names the argument."""

from __future__ import annotations

import pytest

import neuroprobe as npb
from neuroprobe import NeuroprobeError

MLP = "blocks.0.mlp.hook_post"
STIM = [[7 + i, 11 + 2 * i, 13 + 3 * i, 17 + i] for i in range(8)]
IDS = [[1, 5, 9, 13, 17, 21], [2, 4, 6, 8, 10, 12], [3, 7, 11, 15, 19, 23]]


@pytest.fixture(scope="module")
def env(native_model):
    stim = npb.LocalizerStimuli({"s": STIM[:4], "n": STIM[4:]}, target="s", baseline="n")
    values = npb.localizer_values(native_model, stim, MLP)
    net = npb.localize(native_model, stim, MLP, top_percent=10.0)
    return {"m": native_model, "values": values, "net": net}


CASES = [
    ("reference texts int", lambda e: npb.ablation_reference(e["m"], MLP, 5), "texts must be"),
    ("reference texts str", lambda e: npb.ablation_reference(e["m"], MLP, "a text"),
     "texts must be"),
    ("reference max_rows float", lambda e: npb.ablation_reference(e["m"], MLP, IDS,
                                                                  max_rows=2.5), "max_rows"),
    ("reference max_rows neg", lambda e: npb.ablation_reference(e["m"], MLP, IDS, max_rows=-1),
     "max_rows"),
    ("reference seed", lambda e: npb.ablation_reference(e["m"], MLP, IDS, seed=-3), "seed"),
    ("reference model", lambda e: npb.ablation_reference("smollm2", MLP, IDS), "model must"),
    ("effect texts", lambda e: npb.causal_effect(e["m"], e["net"], 3.5), "texts must be"),
    ("effect n_random float", lambda e: npb.causal_effect(e["m"], e["net"], IDS, n_random=2.7),
     "n_random"),
    ("effect n_boot zero", lambda e: npb.causal_effect(e["m"], e["net"], IDS, n_boot=0),
     "n_boot"),
    ("effect n_boot str", lambda e: npb.causal_effect(e["m"], e["net"], IDS, n_boot="many"),
     "n_boot"),
    ("effect spare_bos", lambda e: npb.causal_effect(e["m"], e["net"], IDS, spare_bos="no"),
     "spare_bos"),
    ("dissociation networks", lambda e: npb.dissociation(e["m"], e["net"], {"x": IDS}),
     "networks must be a dict"),
    ("dissociation conditions", lambda e: npb.dissociation(e["m"], {"l": e["net"]}, IDS),
     "conditions must be a dict"),
    ("dissociation condition texts", lambda e: npb.dissociation(e["m"], {"l": e["net"]},
                                                                {"x": 7}), r"conditions\['x'\]"),
    ("random network type", lambda e: npb.random_networks("net", 2), "network must be"),
    ("random n float", lambda e: npb.random_networks(e["net"], 2.5), "n must be"),
    ("random seed", lambda e: npb.random_networks(e["net"], 2, seed="x"), "seed"),
    ("split-half values", lambda e: npb.split_half_reliability([1, 2]), "values must be"),
    ("split-half seed", lambda e: npb.split_half_reliability(e["values"], n_splits=2,
                                                             seed=1.5), "seed"),
    ("md seed", lambda e: npb.multiple_demand_stimuli(8, seed=[]), "seed"),
    ("md answers", lambda e: npb.multiple_demand_stimuli(8, answers="yes"), "answers"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_the_argument_named(env, call, match):
    with pytest.raises(NeuroprobeError, match=match):
        call(env)
