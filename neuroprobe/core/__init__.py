"""The floor every method stands on: models, the one forward engine, hooks, capture.

``core`` imports nothing above it.  Methods (``glm``, ``networks``, ``mae``, ``polytope``,
``spectrum``) import from here and never from each other's private names.
"""

from neuroprobe.core.capture import *  # noqa: F401,F403
from neuroprobe.core.errors import *  # noqa: F401,F403
from neuroprobe.core.models import *  # noqa: F401,F403
from neuroprobe.core.probes import *  # noqa: F401,F403
from neuroprobe.core.recording import *  # noqa: F401,F403
from neuroprobe.core.shards import *  # noqa: F401,F403
from neuroprobe.core.units import *  # noqa: F401,F403
