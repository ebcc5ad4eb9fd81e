"""Sparse autoencoders: the L1 (ReLU) SAE and the TopK SAE.

An SAE maps a hook's output ``x [.., d_in]`` to sparse feature activations
``f [.., d_sae]`` and back::

    f     = act((x - b_dec) @ W_enc + b_enc)        act = ReLU (L1) or ReLU + top-k (TopK)
    x_hat = f @ W_dec + b_dec

with the parameter names and shapes of SAELens (``W_enc [d_in, d_sae]``, ``W_dec
[d_sae, d_in]``), so a neuroprobe SAE, an SAELens SAE and an EleutherAI sparsify SAE are
the same four tensors (see :mod:`neuroprobe.dictionary.formats`).  The SAE object is an
inference model: any dtype, any device.  Training (float32, input normalisation,
decoder-norm-weighted L1, resampling of dead features) lives in
:mod:`neuroprobe.dictionary.train`; the input-normalisation factor is folded into the
weights when training ends, so a trained SAE takes raw activations.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from neuroprobe.core.errors import NeuroprobeError

__all__ = ["SAE", "ARCHITECTURES"]

#: architectures an SAE can have
ARCHITECTURES = ("l1", "topk")


class SAE(nn.Module):
    """A sparse autoencoder at one hook.

    Parameters
    ----------
    d_in : int
        Width of the hook's output.
    d_sae : int
        Number of features (the dictionary size).
    architecture : {"l1", "topk"}
        ``"l1"``: ReLU encoder trained with an L1 penalty (SAELens ``"standard"``);
        ``"topk"``: only the ``k`` largest pre-activations survive (Gao et al. 2024;
        SAELens ``"topk"``, sparsify).
    k : int, optional
        Number of active features of a TopK SAE (required for ``"topk"``, ``k <= d_sae``).
    hook_name : str, optional
        Hook the SAE reads (``"blocks.15.hook_resid_post"``); used by :meth:`features`.
    model_name : str
        Name of the model it was trained on (metadata only).
    seed : int
        Seed of the initialisation (``W_dec`` rows of norm 0.1, ``W_enc = W_dec.T``,
        zero biases).
    metadata : dict, optional
        Extra fields kept in ``cfg.json`` (e.g. ``context_size``, ``prepend_bos``).

    Examples
    --------
    >>> import torch
    >>> from neuroprobe.dictionary import SAE
    >>> sae = SAE(8, 32, "topk", k=4, seed=0)
    >>> x = torch.randn(5, 8)
    >>> f = sae.encode(x)
    >>> tuple(f.shape), int((f != 0).sum(-1).max()) <= 4, tuple(sae(x).shape)
    ((5, 32), True, (5, 8))
    """

    def __init__(self, d_in: int, d_sae: int, architecture: str = "topk", *,
                 k: int | None = None, hook_name: str | None = None, model_name: str = "",
                 seed: int = 0, metadata: dict | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                 ) -> None:
        super().__init__()
        d_in, d_sae = _pos_int(d_in, "d_in"), _pos_int(d_sae, "d_sae")
        if architecture not in ARCHITECTURES:
            raise NeuroprobeError(
                f"SAE(architecture={architecture!r}) is unknown; use one of {ARCHITECTURES}."
            )
        if architecture == "topk":
            if k is None:
                raise NeuroprobeError("SAE(architecture='topk') needs k, e.g. k=32.")
            k = _pos_int(k, "k")
            if k > d_sae:
                raise NeuroprobeError(
                    f"SAE(k={k}) is larger than d_sae={d_sae}; a TopK SAE keeps k <= d_sae "
                    "features active. Lower k or raise d_sae."
                )
        self.d_in, self.d_sae, self.architecture = d_in, d_sae, architecture
        self.k = None if k is None else int(k)
        self.hook_name = hook_name
        self.model_name = model_name
        self.metadata: dict[str, Any] = dict(metadata or {})
        g = torch.Generator().manual_seed(int(seed))
        w = torch.randn(d_sae, d_in, generator=g)
        w = 0.1 * w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.to(dtype=dtype, device=device))
        self.W_enc = nn.Parameter(w.T.clone().to(dtype=dtype, device=device))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype, device=device))
        #: the cfg.json a loaded SAE came with (kept so that re-saving is byte-identical)
        self.source_cfg: dict | None = None

    # ---- the model -------------------------------------------------------------------------
    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Encoder pre-activations ``(x - b_dec) @ W_enc + b_enc`` (in the SAE's dtype)."""
        x = self._check_input(x)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Feature activations of ``x`` (ReLU; TopK keeps the ``k`` largest)."""
        pre = torch.relu(self.pre_activations(x))
        if self.architecture == "topk":
            val, idx = pre.topk(self.k, dim=-1, sorted=False)
            pre = torch.zeros_like(pre).scatter_(-1, idx, val)
        return pre

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """Reconstruction ``f @ W_dec + b_dec``."""
        if f.shape[-1] != self.d_sae:
            raise NeuroprobeError(
                f"decode(f) needs f of width d_sae={self.d_sae}; got shape {tuple(f.shape)}."
            )
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """``decode(encode(x))``, returned in ``x``'s dtype."""
        return self.decode(self.encode(x)).to(x.dtype)

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.shape[-1] != self.d_in:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise NeuroprobeError(
                f"the SAE{' at ' + repr(self.hook_name) if self.hook_name else ''} has "
                f"d_in={self.d_in}; got input of shape {shape}. Use the SAE of the hook "
                "whose output has that width."
            )
        return x.to(device=self.W_enc.device, dtype=self.W_enc.dtype)

    # ---- transformations (each returns a new SAE) -----------------------------------------
    def fold_decoder_norm(self) -> SAE:
        """An equivalent SAE whose decoder rows have unit norm.

        Feature ``i`` is scaled by ``n_i = ||W_dec[i]||``: ``W_enc[:, i] * n_i``, ``b_enc[i]
        * n_i``, ``W_dec[i] / n_i``, so reconstructions are unchanged and feature
        activations become comparable across features (this SAE is not modified).

        Examples
        --------
        >>> import torch
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(6, 12, "l1", seed=1)
        >>> folded = sae.fold_decoder_norm()
        >>> x = torch.randn(4, 6)
        >>> torch.allclose(folded(x), sae(x), atol=1e-6)
        True
        >>> bool(torch.allclose(folded.W_dec.norm(dim=1), torch.ones(12)))
        True
        """
        out = self.copy()
        with torch.no_grad():
            n = out.W_dec.norm(dim=1).clamp_min(1e-12)
            out.W_enc.mul_(n)
            out.b_enc.mul_(n)
            out.W_dec.div_(n[:, None])
        return out

    def fold_input_scale(self, scale: float) -> SAE:
        """The SAE on raw inputs ``x`` of one trained on ``x * scale`` (weights rescaled)."""
        out = self.copy()
        s = float(scale)
        with torch.no_grad():
            out.W_enc.mul_(s)
            out.W_dec.div_(s)
            out.b_dec.div_(s)
        return out

    def copy(self) -> SAE:
        """A deep copy (parameters and metadata)."""
        return copy.deepcopy(self)

    def to_dtype(self, dtype: torch.dtype) -> SAE:
        """A copy in another dtype (inference in bfloat16/float16 is fine)."""
        out = self.copy()
        return out.to(dtype=dtype)

    # ---- units and files ------------------------------------------------------------------
    def features(self, indices=None, *, hook: str | None = None, name: str = "sae"):
        """These SAE features as units (:class:`~neuroprobe.dictionary.SAEFeatures`).

        ``npb.record(model, prompts, hooks=[sae.features()])`` records the encoder's output
        inside the hook; ``indices`` keeps some features only.
        """
        from neuroprobe.dictionary.features import SAEFeatures

        return SAEFeatures.from_sae(self, indices, hook=hook, name=name)

    def save(self, path, *, format: str = "saelens") -> None:  # noqa: A002
        """Write the SAE as an SAELens (``"saelens"``) or sparsify (``"sparsify"``) folder.

        Examples
        --------
        >>> import tempfile
        >>> from neuroprobe.dictionary import SAE, load_sae
        >>> d = tempfile.mkdtemp()
        >>> SAE(8, 16, "topk", k=2, hook_name="blocks.0.hook_resid_post").save(d)
        >>> load_sae(d).k
        2
        """
        from neuroprobe.dictionary.formats import save_sae

        save_sae(self, path, format=format)

    def __repr__(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (f"SAE({self.architecture}, d_in={self.d_in}, d_sae={self.d_sae}{k}, "
                f"hook={self.hook_name!r}, dtype={self.W_enc.dtype})")


def _pos_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not (
        hasattr(v, "__index__") and not isinstance(v, float)
    ):
        raise NeuroprobeError(f"{name} must be a positive int; got {v!r}.")
    v = int(v)
    if v <= 0:
        raise NeuroprobeError(f"{name} must be a positive int; got {v}.")
    return v
