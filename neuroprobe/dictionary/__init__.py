"""Sparse dictionary learning: SAEs trained, evaluated and loaded on TransformerLens 4 hooks,
and their features used as units everywhere (Bricken et al. 2023, Towards Monosemanticity;
Klindt, Sanborn et al. 2023 for comparing bases)."""

from neuroprobe.dictionary import bases, corpus, dashboard, evaluate, features, sae, store, train
from neuroprobe.dictionary.bases import *  # noqa: F401,F403
from neuroprobe.dictionary.corpus import *  # noqa: F401,F403
from neuroprobe.dictionary.dashboard import *  # noqa: F401,F403
from neuroprobe.dictionary.evaluate import *  # noqa: F401,F403
from neuroprobe.dictionary.features import *  # noqa: F401,F403
from neuroprobe.dictionary.sae import *  # noqa: F401,F403
from neuroprobe.dictionary.store import *  # noqa: F401,F403
from neuroprobe.dictionary.train import *  # noqa: F401,F403

# only the public names travel with ``from neuroprobe.dictionary import *`` (never the
# submodule names, which would shadow ``neuroprobe.units`` and the like)
__all__ = [n for m in (bases, corpus, dashboard, evaluate, features, sae, store, train)
           for n in m.__all__]
