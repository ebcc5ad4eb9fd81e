"""Mass-univariate GLMs over time series: designs, fits, contrasts, corrections, streaming.

The numbers match nilearn's first-level model (OLS and AR(1)) and statsmodels to ~1e-13.

Modules, bottom to top (each imports only those below it): ``pvalues`` and ``stats``
(p-values and corrections; sufficient statistics and the fits computed from them),
``design`` (block designs, design matrices as arrays), ``permutation`` (block-permutation
max-T), ``contrast`` (contrast parsing, :class:`ContrastResult`), ``fit``
(:func:`fit_glm`, :class:`GLMResult`), ``probe`` (:class:`GLMProbe`) and ``blocks`` (the
block-design fast path over per-block statistics).
"""

from neuroprobe.glm.blocks import *  # noqa: F401,F403
from neuroprobe.glm.contrast import *  # noqa: F401,F403
from neuroprobe.glm.design import *  # noqa: F401,F403
from neuroprobe.glm.fit import *  # noqa: F401,F403
from neuroprobe.glm.probe import *  # noqa: F401,F403
from neuroprobe.glm.residuals import *  # noqa: F401,F403
from neuroprobe.glm.second_level import *  # noqa: F401,F403
