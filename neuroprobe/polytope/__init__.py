"""The polytope lens: spline codes, polytope density, clusters of codes and activations."""

from neuroprobe.polytope.cluster import *  # noqa: F401,F403
from neuroprobe.polytope.density import *  # noqa: F401,F403
from neuroprobe.polytope.spline import *  # noqa: F401,F403
