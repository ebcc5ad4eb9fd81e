"""Functional networks: block-design stimuli, sets of significant units, the experiment,
localizers and causal tests by ablation."""

from neuroprobe.networks.ablation import *  # noqa: F401,F403
from neuroprobe.networks.experiment import *  # noqa: F401,F403
from neuroprobe.networks.localizers import *  # noqa: F401,F403
from neuroprobe.networks.sets import *  # noqa: F401,F403
from neuroprobe.networks.stimuli import *  # noqa: F401,F403
