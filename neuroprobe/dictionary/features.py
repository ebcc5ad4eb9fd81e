"""SAE features as units: a :class:`~neuroprobe.core.units.Directions` whose projection is
the SAE's encoder.

Everything that records or streams directions calls ``Directions.unit_activations(acts)``; that
method runs ``sae.encode`` (bias, ReLU and, for TopK, the top-k over *all* features) inside
the hook, so ``record``, ``stream``, ``fit_glm`` over a recording, ``max_activating_examples``,
``prune_to_mae``, ``local_search`` and ``eigenspectrum`` take SAE features wherever they take
directions.  ``vectors`` holds the encoder columns of the kept features (so widths are
checked as for any direction), but the recorded value is the encoder's output, not
``acts @ vectors.T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.units import Directions

__all__ = ["SAEFeatures"]


@dataclass(frozen=True, eq=False)
class SAEFeatures(Directions):
    """Features of a sparse autoencoder at its hook, recorded as units.

    Build with :meth:`SAE.features` (or :meth:`from_sae`).  Column ``j`` of a recording is
    feature ``features[j]`` of the SAE.

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.dictionary import SAE
    >>> sae = SAE(8, 16, "topk", k=3, hook_name="blocks.0.hook_resid_post")
    >>> feats = sae.features([0, 5])
    >>> feats.n_directions, feats.width
    (2, 8)
    >>> x = torch.randn(4, 8)
    >>> torch.equal(feats.unit_activations(x), sae.encode(x)[:, [0, 5]])
    True
    """

    sae: object = None
    features: tuple = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sae is None:
            raise NeuroprobeError("SAEFeatures(sae=...) is missing; build it with sae.features().")

    @classmethod
    def from_sae(cls, sae, indices=None, *, hook: str | None = None,
                 name: str = "sae") -> SAEFeatures:
        """The SAE's features (all, or ``indices``) as units at ``hook`` (default: the SAE's)."""
        hook = hook or sae.hook_name
        if not hook:
            raise NeuroprobeError(
                "this SAE has no hook_name; pass hook='blocks.L.hook_resid_post' to features()."
            )
        if indices is None:
            idx = np.arange(sae.d_sae)
        else:
            from neuroprobe.core.validation import check_index_list

            try:
                idx = np.asarray(check_index_list(indices, "features(indices=...)",
                                                  size=sae.d_sae, what="feature number"),
                                 dtype=np.int64)
            except NeuroprobeError as e:
                raise NeuroprobeError(
                    f"{e} Pass distinct feature numbers in 0..{sae.d_sae - 1}."
                ) from None
        vec = sae.W_enc.detach().T[torch.as_tensor(idx)].float().cpu()
        return cls(hook, vec, name, sae=sae, features=tuple(int(i) for i in idx))

    def unit_activations(self, acts: Float[Tensor, "... d"]
                         ) -> Float[Tensor, "... n_directions"]:
        """The SAE's feature activations of ``acts`` (kept features only), in acts' dtype."""
        if acts.shape[-1] != self.width:
            raise NeuroprobeError(
                f"the SAE features at {self.hook!r} have d_in={self.width}, but the hook's output "
                f"has width {acts.shape[-1]}; use the SAE trained at this hook."
            )
        with torch.no_grad():
            f = self.sae.encode(acts)
        if len(self.features) != self.sae.d_sae:
            f = f[..., torch.as_tensor(self.features, device=f.device)]
        return f.to(device=acts.device, dtype=acts.dtype)

    def subset(self, indices) -> SAEFeatures:
        """The units ``indices`` (positions in this set) as a smaller set of SAE features."""
        from neuroprobe.core.validation import check_index_list

        if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
            indices = [indices]
        idx = np.asarray(check_index_list(indices, "subset(indices=...)", unique=False,
                                          size=len(self.features), what="position"),
                         dtype=np.int64)
        return SAEFeatures.from_sae(self.sae, np.asarray(self.features)[idx], hook=self.hook,
                                    name=self.name)
