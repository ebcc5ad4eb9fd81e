"""Max-activating examples, minimal activating examples (MAE) and local search."""

from neuroprobe.mae.corpus import *  # noqa: F401,F403
from neuroprobe.mae.prune import *  # noqa: F401,F403
from neuroprobe.mae.substitute import *  # noqa: F401,F403
