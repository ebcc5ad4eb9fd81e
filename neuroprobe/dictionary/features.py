"""SAE features as units: a :class:`~neuroprobe.core.units.Directions` whose projection is
the SAE's encoder.

Everything that records or streams directions calls ``Directions.unit_activations(acts)``; that
method runs ``sae.encode`` (bias, ReLU and, for TopK, the top-k over *all* features) inside
the hook, so ``record``, ``stream``, ``fit_glm`` over a recording, ``max_activating_examples``,
``prune_to_mae``, ``local_search`` and ``eigenspectrum`` take SAE features wherever they take
directions.  ``vectors`` holds the encoder columns of the kept features (so widths are
checked as for any direction), but the recorded value is the encoder's output, not
``acts @ vectors.T``.

The SAE may sit on another device or in another dtype than the model (``train_sae_on_store``
returns it on CUDA where there is one): inside the hook the activations go to the SAE's
device and dtype, are encoded there, and the feature activations come back in the hook's
device and dtype.
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

    Attributes
    ----------
    hook : str
        The hook whose output is encoded.
    vectors : Tensor ``[n_directions, d_in]``
        The encoder columns of the kept features (float32, CPU); widths are checked with it.
    name : str
        The units' label suffix (``"<hook>@<name>"`` in a recording).
    sae : SAE
        The sparse autoencoder whose ``encode`` gives the activations.
    features : tuple of int
        The SAE's feature numbers, in column order.

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
        """The SAE's features (all, or ``indices``) as units at ``hook``.

        Parameters
        ----------
        sae : SAE
        indices : sequence of int, optional
            Distinct feature numbers in ``0 .. d_sae - 1`` (default: every feature).
        hook : str, optional
            The hook to encode (default: the SAE's ``hook_name``).
        name : str
            Label of the units (``"<hook>@<name>"``).

        Returns
        -------
        SAEFeatures

        Examples
        --------
        >>> from neuroprobe.dictionary import SAE, SAEFeatures
        >>> sae = SAE(8, 16, "l1", hook_name="blocks.0.hook_resid_post")
        >>> SAEFeatures.from_sae(sae, [2, 9]).features
        (2, 9)
        """
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
        W = sae.W_enc.detach()
        vec = W.T[torch.as_tensor(idx, device=W.device)].float().cpu()
        return cls(hook, vec, name, sae=sae, features=tuple(int(i) for i in idx))

    def unit_activations(self, acts: Float[Tensor, "... d"]
                         ) -> Float[Tensor, "... n_directions"]:
        """The SAE's feature activations of ``acts`` (kept features only).

        Parameters
        ----------
        acts : Tensor ``[..., d_in]``
            The hook's output, on any device and in any float dtype.

        Returns
        -------
        Tensor ``[..., n_directions]``
            ``sae.encode(acts)`` of the kept features (TopK over all features), computed on
            the SAE's device and in its dtype, returned on ``acts``' device in its dtype.
        """
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
        """The units ``indices`` (positions in this set) as a smaller set of SAE features.

        Parameters
        ----------
        indices : int or sequence of int
            Positions in this set (not feature numbers); repeats allowed.

        Returns
        -------
        SAEFeatures

        Examples
        --------
        >>> from neuroprobe.dictionary import SAE
        >>> SAE(8, 16, "l1", hook_name="h").features([4, 7, 9]).subset([2, 0]).features
        (9, 4)
        """
        from neuroprobe.core.validation import check_index_list

        if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
            indices = [indices]
        idx = np.asarray(check_index_list(indices, "subset(indices=...)", unique=False,
                                          size=len(self.features), what="position"),
                         dtype=np.int64)
        return SAEFeatures.from_sae(self.sae, np.asarray(self.features)[idx], hook=self.hook,
                                    name=self.name)
