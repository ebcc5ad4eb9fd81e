"""Mass-univariate GLMs over time series: designs, fits, contrasts, corrections, streaming.

The numbers match nilearn's first-level model (OLS and AR(1)) and statsmodels to ~1e-13.
"""

from neuroprobe.glm.design import *  # noqa: F401,F403
from neuroprobe.glm.fit import *  # noqa: F401,F403
from neuroprobe.glm.residuals import *  # noqa: F401,F403
from neuroprobe.glm.second_level import *  # noqa: F401,F403
