"""Functional networks: block-design stimuli, sets of significant units, the experiment."""

from neuroprobe.networks.stimuli import *  # noqa: F401,F403
from neuroprobe.networks.sets import *  # noqa: F401,F403
from neuroprobe.networks.experiment import *  # noqa: F401,F403
from neuroprobe.networks.localize import *  # noqa: F401,F403
from neuroprobe.networks.ablate import *  # noqa: F401,F403
