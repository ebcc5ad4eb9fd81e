"""Sparse autoencoders: the L1 (ReLU) SAE and the TopK SAE.

An SAE maps a hook's output ``x [.., d_in]`` to sparse feature activations
``f [.., d_sae]`` and back::

    f     = act((x - b_dec) @ W_enc + b_enc)        act = ReLU (L1) or ReLU + top-k (TopK)
    x_hat = f @ W_dec + b_dec

with the parameter names and shapes of SAELens (``W_enc [d_in, d_sae]``, ``W_dec
[d_sae, d_in]``), so a neuroprobe SAE, an SAELens SAE and an EleutherAI sparsify SAE are
the same four tensors (read and written below).  The SAE object is an
inference model: any dtype, any device.  Training (float32, input normalisation,
decoder-norm-weighted L1, resampling of dead features) lives in
:mod:`neuroprobe.dictionary.train`; the input-normalisation factor is folded into the
weights when training ends, so a trained SAE takes raw activations.

On-disk formats
---------------
Reading and writing SAEs in the SAELens and EleutherAI sparsify formats.

SAELens (6.x): a folder with ``cfg.json`` and ``sae_weights.safetensors`` holding ``W_enc
[d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``; cfg fields
``d_in, d_sae, dtype, device, apply_b_dec_to_input, normalize_activations, architecture``
(``"standard"`` = our ``"l1"``, ``"topk"`` with ``k``) and ``metadata{model_name, hook_name,
context_size, prepend_bos}``.

sparsify (EleutherAI): a folder with ``cfg.json`` (``num_latents, k, d_in``, ...) and
``sae.safetensors`` holding ``encoder.weight [n_latents, d_in]``, ``encoder.bias``, ``W_dec
[n_latents, d_in]``, ``b_dec``; TopK only, and the hook is the folder's name in a sparsify
run (``layers.15``), so pass ``hook_name=`` when loading one.

SAELens cfg fields that change what the SAE computes are honoured or refused, never
ignored: ``apply_b_dec_to_input=false`` and, for TopK, ``rescale_acts_by_decoder_norm=true``
are folded into the weights on load (the loaded SAE computes what SAELens computes, and is
saved back with ``apply_b_dec_to_input=true`` / ``rescale_acts_by_decoder_norm=false``);
``normalize_activations`` other than ``"none"``, ``reshape_activations="hook_z"``, a
``hook_head_index``, pre-6.0 activation functions other than ReLU/TopK and tensors besides
the four are refused with a :class:`~neuroprobe.NeuroprobeError` naming the field, its value
and the file.

Writing is deterministic (sorted JSON keys, safetensors' own sorted layout), and a loaded
SAE keeps the cfg it came with, so save -> load -> save gives the same bytes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import (
    check_float_dtype,
    check_int,
    check_real,
    check_writable_path,
    resolve_device,
)

__all__ = ["SAE", "ARCHITECTURES", "load_sae", "save_sae", "FORMATS"]

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
        dtype = check_float_dtype(dtype, "dtype", allow_str=False)
        device = resolve_device(device)
        seed = check_int(seed, "seed")
        if hook_name is not None and not isinstance(hook_name, str):
            raise NeuroprobeError(
                f"hook_name must be a hook name (str) or None; got {hook_name!r}."
            )
        if not isinstance(model_name, str):
            raise NeuroprobeError(f"model_name must be a str; got {model_name!r}.")
        if metadata is not None and not isinstance(metadata, dict):
            raise NeuroprobeError(
                f"metadata must be a dict or None; got {type(metadata).__name__}."
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
        """Encoder pre-activations ``(x - b_dec) @ W_enc + b_enc`` (in the SAE's dtype).

        Parameters
        ----------
        x : Tensor
            Hook outputs ``[..., d_in]``, any float dtype and device (moved to the SAE's).

        Returns
        -------
        Tensor
            ``[..., d_sae]``, in the SAE's dtype and on its device.

        Examples
        --------
        >>> import torch
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(4, 6, "l1", seed=0)
        >>> x = torch.randn(3, 4)
        >>> torch.equal(sae.pre_activations(x), (x - sae.b_dec) @ sae.W_enc + sae.b_enc)
        True
        """
        x = self._check_input(x)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Feature activations of ``x``: ``relu(pre_activations(x))``, of which a TopK SAE
        keeps the ``k`` largest per token (the rest are 0).

        Parameters
        ----------
        x : Tensor
            Hook outputs ``[..., d_in]`` (any leading dimensions, e.g. ``[batch, pos,
            d_in]``), any float dtype and device: they are moved to the SAE's.

        Returns
        -------
        Tensor
            ``[..., d_sae]``, non-negative, in the SAE's dtype and on its device; at most
            ``k`` non-zero entries per token for a TopK SAE.

        Raises
        ------
        NeuroprobeError
            When ``x`` is not a tensor whose last dimension is ``d_in``.

        Examples
        --------
        >>> import torch
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(8, 32, "topk", k=3, seed=0)
        >>> f = sae.encode(torch.randn(2, 5, 8))
        >>> tuple(f.shape), int((f != 0).sum(-1).max()) <= 3, bool((f >= 0).all())
        ((2, 5, 32), True, True)
        """
        pre = torch.relu(self.pre_activations(x))
        if self.architecture == "topk":
            val, idx = pre.topk(self.k, dim=-1, sorted=False)
            pre = torch.zeros_like(pre).scatter_(-1, idx, val)
        return pre

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """Reconstruction ``f @ W_dec + b_dec`` of feature activations ``f``.

        Parameters
        ----------
        f : Tensor
            Feature activations ``[..., d_sae]`` (from :meth:`encode`, or edited ones: a
            feature set to 0 or clamped), on the SAE's device; cast to the SAE's dtype.

        Returns
        -------
        Tensor
            ``[..., d_in]``, in the SAE's dtype.

        Raises
        ------
        NeuroprobeError
            When ``f`` is not a tensor whose last dimension is ``d_sae``.

        Examples
        --------
        >>> import torch
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(8, 32, "l1", seed=0)
        >>> f = torch.zeros(1, 32)
        >>> f[0, 5] = 2.0
        >>> torch.allclose(sae.decode(f)[0], 2.0 * sae.W_dec[5] + sae.b_dec)
        True
        """
        if not isinstance(f, Tensor):
            raise NeuroprobeError(
                f"decode(f) needs a tensor of feature activations [..., {self.d_sae}]; got "
                f"{type(f).__name__}."
            )
        if f.shape[-1] != self.d_sae:
            raise NeuroprobeError(
                f"decode(f) needs f of width d_sae={self.d_sae}; got shape {tuple(f.shape)}."
            )
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction ``decode(encode(x))`` (``sae(x)``), in ``x``'s dtype.

        Parameters
        ----------
        x : Tensor
            Hook outputs ``[..., d_in]``, any float dtype.

        Returns
        -------
        Tensor
            ``[..., d_in]``, in ``x``'s dtype (computed in the SAE's), on the SAE's device.

        Examples
        --------
        >>> import torch
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(8, 32, "topk", k=4, seed=0)
        >>> x = torch.randn(3, 8, dtype=torch.float64)
        >>> x_hat = sae(x)
        >>> x_hat.dtype, torch.allclose(x_hat, sae.decode(sae.encode(x)).double())
        (torch.float64, True)
        """
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

        Returns
        -------
        SAE
            The folded copy (same reconstructions).

        Raises
        ------
        NeuroprobeError
            For a TopK SAE whose decoder rows do not share one norm (up to the dtype's
            rounding): rescaling the pre-activations feature by feature would change which
            ``k`` features are kept, so no equivalent SAE exists (SAELens refuses
            ``fold_W_dec_norm`` for such TopK SAEs too).  Rows of one common norm (a fresh
            SAE, a unit-norm SAE in bfloat16) fold exactly.

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
        if self.architecture == "topk":
            # rows of one common norm fold exactly (every pre-activation scaled by the same
            # positive factor keeps the same k winners); "one norm" up to the dtype's rounding
            n = self.W_dec.detach().double().norm(dim=1)
            tol = max(1e-5, 4 * torch.finfo(self.W_dec.dtype).eps)
            if not (float(n.min()) > 0 and float(n.max() / n.min()) - 1 <= tol):
                raise NeuroprobeError(
                    "fold_decoder_norm() has no equivalent for this TopK SAE: its decoder-row "
                    f"norms range {float(n.min()):.4g}..{float(n.max()):.4g}, and rescaling the "
                    "pre-activations by them changes which k features are kept. Fold only L1 "
                    "SAEs or TopK SAEs whose rows share one norm (a TopK SAE trained by "
                    "neuroprobe keeps unit-norm rows already)."
                )
        out = self.copy()
        with torch.no_grad():
            n = out.W_dec.norm(dim=1).clamp_min(1e-12)
            out.W_enc.mul_(n)
            out.b_enc.mul_(n)
            out.W_dec.div_(n[:, None])
        return out

    def fold_input_scale(self, scale: float) -> SAE:
        """The SAE on raw inputs ``x`` of one trained on ``x * scale`` (weights rescaled).

        ``W_enc * scale``, ``W_dec / scale``, ``b_dec / scale``: the copy's ``encode(x)``
        equals this SAE's ``encode(x * scale)`` and its reconstruction is this one's divided
        by ``scale`` (this SAE is not modified).

        Parameters
        ----------
        scale : float
            The positive factor the training inputs were multiplied by.

        Returns
        -------
        SAE
            The folded copy.

        Examples
        --------
        >>> import torch
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(4, 8, "l1", seed=0)
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(sae.fold_input_scale(2.0)(x), sae(2.0 * x) / 2.0, atol=1e-6)
        True
        """
        s = check_real(scale, "scale", minimum=0, low_open=True)
        out = self.copy()
        with torch.no_grad():
            out.W_enc.mul_(s)
            out.W_dec.div_(s)
            out.b_dec.div_(s)
        return out

    def copy(self) -> SAE:
        """A deep copy (parameters, metadata and the cfg it was loaded with).

        Returns
        -------
        SAE
            An independent SAE: changing its weights leaves this one alone.

        Examples
        --------
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(4, 8, "l1", seed=0)
        >>> other = sae.copy()
        >>> _ = other.b_enc.data.fill_(1.0)
        >>> float(sae.b_enc.detach().sum()), float(other.b_enc.detach().sum())
        (0.0, 8.0)
        """
        return copy.deepcopy(self)

    def to_dtype(self, dtype: torch.dtype) -> SAE:
        """A copy of this SAE with its parameters in another dtype (this SAE is unchanged).

        Inference in bfloat16 or float16 is fine; train in float32.

        Parameters
        ----------
        dtype : torch.dtype
            A float dtype, e.g. ``torch.bfloat16``.

        Returns
        -------
        SAE
            The copy; its ``encode`` / ``decode`` compute in ``dtype``.

        Examples
        --------
        >>> import torch
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(8, 32, "topk", k=4, seed=0)
        >>> half = sae.to_dtype(torch.bfloat16)
        >>> half.W_enc.dtype, sae.W_enc.dtype, half(torch.randn(2, 8)).dtype
        (torch.bfloat16, torch.float32, torch.float32)
        """
        dtype = check_float_dtype(dtype, "dtype", allow_str=False)
        out = self.copy()
        return out.to(dtype=dtype)

    # ---- units and files ------------------------------------------------------------------
    def features(self, indices=None, *, hook: str | None = None, name: str = "sae"):
        """These SAE features as units (:class:`~neuroprobe.dictionary.SAEFeatures`).

        ``npb.record(model, prompts, hooks=[sae.features()])`` records the encoder's output
        inside the hook, and every analysis that takes units (``stream``, ``fit_glm``,
        ``max_activating_examples``, ``prune_to_mae``, ``eigenspectrum``, ...) takes them.

        Parameters
        ----------
        indices : sequence of int, optional
            Feature numbers to keep (distinct, in ``0..d_sae-1``), in the order given;
            default all ``d_sae`` features.
        hook : str, optional
            Hook to read; default the SAE's ``hook_name`` (one of them is needed).
        name : str
            Label of the units (``"sae"``), shown in unit names and tables.

        Returns
        -------
        SAEFeatures
            One unit per kept feature; its activations equal ``encode`` of the hook output.

        Examples
        --------
        >>> from neuroprobe.dictionary import SAE
        >>> sae = SAE(8, 32, "topk", k=4, hook_name="blocks.0.hook_resid_post")
        >>> units = sae.features([3, 7])
        >>> units.hook, units.features
        ('blocks.0.hook_resid_post', (3, 7))
        """
        from neuroprobe.dictionary.features import SAEFeatures

        return SAEFeatures.from_sae(self, indices, hook=hook, name=name)

    def save(self, path, *, format: str = "saelens") -> None:  # noqa: A002
        """Write the SAE as an SAELens (``"saelens"``) or sparsify (``"sparsify"``) folder.

        See :func:`save_sae` (this is ``save_sae(self, path, format=format)``).

        Parameters
        ----------
        path : str or Path
            Folder to write (created if needed).
        format : {"saelens", "sparsify"}
            sparsify holds TopK SAEs only.

        Examples
        --------
        >>> import tempfile
        >>> from neuroprobe.dictionary import SAE, load_sae
        >>> d = tempfile.mkdtemp()
        >>> SAE(8, 16, "topk", k=2, hook_name="blocks.0.hook_resid_post").save(d)
        >>> load_sae(d).k
        2
        """
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


# ---- on-disk formats -------------------------------------------------------------------
FORMATS = ("saelens", "sparsify")
_SAELENS_W, _SPARSIFY_W = "sae_weights.safetensors", "sae.safetensors"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}
_SAELENS_ARCH = {"standard": "l1", "topk": "topk"}


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def _dump(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def save_sae(sae: SAE, path, *, format: str = "saelens") -> None:  # noqa: A002
    """Write ``sae`` into the folder ``path`` (created if needed).

    Parameters
    ----------
    sae : SAE
    path : str or Path
        Folder to write (``cfg.json`` + the format's safetensors file).
    format : {"saelens", "sparsify"}
        sparsify holds TopK SAEs only.

    Examples
    --------
    >>> import tempfile
    >>> from neuroprobe.dictionary import SAE, save_sae, load_sae
    >>> d = tempfile.mkdtemp()
    >>> save_sae(SAE(4, 8, "topk", k=2, hook_name="blocks.0.hook_resid_post"), d,
    ...          format="sparsify")
    >>> load_sae(d, hook_name="blocks.0.hook_resid_post").d_sae
    8
    """
    from safetensors.torch import save_file

    if not isinstance(sae, SAE):
        raise NeuroprobeError(f"save_sae(sae=...) needs an SAE; got {type(sae).__name__}.")
    if not isinstance(format, str) or format not in FORMATS:
        raise NeuroprobeError(f"save(format={format!r}) is unknown; use one of {FORMATS}.")
    if sae.architecture != "topk" and format == "sparsify":
        raise NeuroprobeError(
            f"save(format='sparsify') holds TopK SAEs only; this SAE is {sae.architecture!r}. "
            "Use format='saelens'."
        )
    out = check_writable_path(path, "path", directory=True)
    w = {n: getattr(sae, n).detach().cpu().contiguous() for n in ("W_enc", "W_dec", "b_enc",
                                                                    "b_dec")}
    src = dict(sae.source_cfg or {})
    if format == "saelens":
        arch = {"l1": "standard", "topk": "topk"}[sae.architecture]
        meta = dict(src.get("metadata") or {})
        meta.update(sae.metadata)
        meta.update(model_name=sae.model_name or meta.get("model_name", ""),
                    hook_name=sae.hook_name or meta.get("hook_name", ""))
        meta.setdefault("context_size", None)
        meta.setdefault("prepend_bos", True)
        cfg = {k: v for k, v in src.items() if "num_latents" not in src}
        cfg.update(architecture=arch, d_in=sae.d_in, d_sae=sae.d_sae,
                   dtype=_dtype_name(sae.W_enc.dtype), metadata=meta)
        cfg.setdefault("device", "cpu")
        # what a neuroprobe SAE computes, whatever the source cfg said: the loader folded
        # apply_b_dec_to_input=false and rescale_acts_by_decoder_norm=true into the weights
        cfg["apply_b_dec_to_input"] = True
        if cfg.get("normalize_activations") in (None, False):
            cfg["normalize_activations"] = "none"
        cfg.setdefault("reshape_activations", "none")
        if "rescale_acts_by_decoder_norm" in cfg:
            cfg["rescale_acts_by_decoder_norm"] = False
        if sae.k is not None:
            cfg["k"] = sae.k
        else:
            cfg.pop("k", None)
        (out / "cfg.json").write_bytes(_dump(cfg))
        save_file(w, str(out / _SAELENS_W))
        return
    if sae.architecture != "topk":
        raise NeuroprobeError(
            f"save(format='sparsify') holds TopK SAEs only; this SAE is {sae.architecture!r}. "
            "Use format='saelens'."
        )
    cfg = {k: v for k, v in src.items() if "num_latents" in src}
    cfg.update(num_latents=sae.d_sae, k=sae.k, d_in=sae.d_in)
    for key, val in (("activation", "topk"), ("expansion_factor", max(1, sae.d_sae // sae.d_in)),
                     ("normalize_decoder", True), ("multi_topk", False),
                     ("skip_connection", False), ("transcode", False)):
        cfg.setdefault(key, val)
    (out / "cfg.json").write_bytes(_dump(cfg))
    sp = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
          "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    save_file(sp, str(out / _SPARSIFY_W))


def load_sae(path, *, hook_name: str | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> SAE:
    """Read an SAE from an SAELens or sparsify folder (told apart by their files).

    Parameters
    ----------
    path : str or Path
        Folder with ``cfg.json`` and ``sae_weights.safetensors`` (SAELens) or
        ``sae.safetensors`` (sparsify).
    hook_name : str, optional
        Hook the SAE reads; overrides the cfg's (sparsify folders do not name it).
    device, dtype
        Where and in which dtype to put the weights (default: the file's dtype).

    Examples
    --------
    >>> import tempfile
    >>> from neuroprobe.dictionary import SAE, load_sae
    >>> d = tempfile.mkdtemp()
    >>> SAE(4, 8, "l1", hook_name="blocks.0.hook_resid_post").save(d)
    >>> load_sae(d)
    SAE(l1, d_in=4, d_sae=8, hook='blocks.0.hook_resid_post', dtype=torch.float32)
    """
    import os

    if not isinstance(path, (str, os.PathLike)):
        raise NeuroprobeError(
            f"load_sae(path=...) must be a folder path (str or Path); got {type(path).__name__}."
        )
    if hook_name is not None and not isinstance(hook_name, str):
        raise NeuroprobeError(f"hook_name must be a hook name (str) or None; got {hook_name!r}.")
    dtype = check_float_dtype(dtype, "dtype", allow_none=True, allow_str=False)
    device = resolve_device(device)
    p = Path(path)
    cfg_path = p / "cfg.json"
    if not p.is_dir() or not cfg_path.exists():
        raise NeuroprobeError(
            f"load_sae(path={str(path)!r}): expected a folder with cfg.json (SAELens or "
            "sparsify format); it does not exist or has no cfg.json."
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NeuroprobeError(f"{cfg_path} is not valid JSON ({e}); re-save the SAE.") from e
    if not isinstance(cfg, dict):
        raise NeuroprobeError(
            f"{cfg_path} holds a JSON {type(cfg).__name__}, not an object of settings; re-save "
            "the SAE."
        )
    if (p / _SAELENS_W).exists():
        sae = _load_saelens(p, cfg, cfg_path)
    elif (p / _SPARSIFY_W).exists():
        sae = _load_sparsify(p, cfg, cfg_path)
    else:
        raise NeuroprobeError(
            f"load_sae(path={str(path)!r}) has cfg.json but neither {_SAELENS_W} (SAELens) "
            f"nor {_SPARSIFY_W} (sparsify)."
        )
    if hook_name is not None:
        sae.hook_name = hook_name
    sae.source_cfg = cfg
    from neuroprobe.core.validation import warn_if_not_finite

    for n in ("W_enc", "W_dec", "b_enc", "b_dec"):
        if not warn_if_not_finite(getattr(sae, n).detach(), f"{path}: the SAE's {n}"):
            break
    return sae.to(device=device, dtype=dtype) if dtype is not None else sae.to(device)


def _need(cfg: dict, key: str, cfg_path: Path):
    if key not in cfg:
        raise NeuroprobeError(
            f"{cfg_path} has no key {key!r}; an SAE cfg.json needs it (keys present: "
            f"{sorted(cfg)})."
        )
    return cfg[key]


def _need_int(cfg: dict, key: str, cfg_path: Path) -> int:
    v = _need(cfg, key, cfg_path)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise NeuroprobeError(
            f"{cfg_path}: {key} must be a non-negative integer; got {v!r}. The file is corrupt; "
            "re-save the SAE."
        )
    return v


def _read_tensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise NeuroprobeError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); it is "
            "corrupt or truncated. Re-save or re-download the SAE."
        ) from e


def _expect(t: dict, name: str, shape: tuple, path: Path):
    if name not in t:
        raise NeuroprobeError(f"{path} has no tensor {name!r}; tensors are {sorted(t)}.")
    if tuple(t[name].shape) != shape:
        raise NeuroprobeError(
            f"{path}: tensor {name!r} has shape {tuple(t[name].shape)}, but cfg.json says "
            f"{shape}."
        )
    return t[name]


#: SAELens 6 ``normalize_activations`` values, and why each but "none" cannot be honoured
_SAELENS_NORMS = {
    "expected_average_only_in": (
        "the SAE expects inputs multiplied by a dataset norm-scaling factor that cfg.json does "
        "not hold; fold the factor into the weights first (SAELens: "
        "sae.fold_activation_norm_scaling_factor(factor), then save_model)"),
    "constant_norm_rescale": (
        "each token is rescaled to norm sqrt(d_in) before encoding and the reconstruction is "
        "divided by that token's own factor, which decode(f) alone cannot know (neuroprobe SAEs "
        "have a plain linear decoder)"),
    "layer_norm": (
        "each token is layer-normalised before encoding and the reconstruction is "
        "un-normalised with that token's own mean and std, which decode(f) alone cannot know "
        "(neuroprobe SAEs have a plain linear decoder)"),
}


def _saelens_semantics(cfg: dict, cfg_path: Path, arch: str) -> tuple[bool, bool]:
    """Check every cfg field of SAELens 6 that changes what the SAE computes.

    Returns ``(subtract_b_dec, rescale_by_decoder_norm)``: the two flags neuroprobe honours
    by folding them into the weights (see :func:`_fold_saelens_flags`); every other
    non-default setting is refused with the field, its value and the file named.
    """
    def refuse(key: str, value, why: str) -> NeuroprobeError:
        return NeuroprobeError(f"{cfg_path}: {key}={value!r} is not supported: {why}.")

    norm = cfg.get("normalize_activations", "none")
    # None and false are what pre-6.0 SAELens wrote for "none" (SAELens 6 maps them so)
    if norm not in ("none", None, False):
        if norm is True:
            norm = "expected_average_only_in"  # pre-6.0 spelling, as SAELens 6 reads it
        if norm in _SAELENS_NORMS:
            raise refuse("normalize_activations", cfg["normalize_activations"],
                         _SAELENS_NORMS[norm])
        raise refuse("normalize_activations", norm,
                     "the value is unknown; SAELens 6 writes one of 'none', "
                     "'expected_average_only_in', 'constant_norm_rescale', 'layer_norm'")
    reshape = cfg.get("reshape_activations", "none")
    if reshape not in ("none", None):
        why = ("the SAE reads attention hook_z flattened over heads ([..., n_heads, d_head] -> "
               "[..., n_heads * d_head]) and reshapes its output back; neuroprobe SAEs read a "
               "hook's last dimension as d_in") if reshape == "hook_z" else (
               "the value is unknown; SAELens 6 writes 'none' or 'hook_z'")
        raise refuse("reshape_activations", reshape, why)
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise refuse("apply_b_dec_to_input", apply_b_dec,
                     "it must be true or false (whether b_dec is subtracted from the input "
                     "before encoding)")
    rescale = cfg.get("rescale_acts_by_decoder_norm", False) if arch == "topk" else False
    if not isinstance(rescale, bool):
        raise refuse("rescale_acts_by_decoder_norm", rescale,
                     "it must be true or false (whether TopK pre-activations are multiplied "
                     "by the decoder-row norms)")
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    for key in ("hook_head_index", "hook_point_head_index"):
        head = meta.get(key, cfg.get(key))
        if head is not None:
            raise refuse(key, head, "the SAE reads one attention head of its hook, and "
                         "neuroprobe SAEs read the whole hook output")
    if cfg.get("finetuning_scaling_factor"):
        raise refuse("finetuning_scaling_factor", cfg["finetuning_scaling_factor"],
                     "pre-6.0 SAELens scaled the features by a learnt vector before decoding; "
                     "neither SAELens 6 nor neuroprobe reads it")
    for key in ("activation_fn_str", "activation_fn"):
        act = cfg.get(key)
        if act is not None and act != "relu" and not (arch == "topk" and act == "topk"):
            raise refuse(key, act, f"a pre-6.0 SAELens activation; neuroprobe reads ReLU "
                         f"('standard') and 'topk' SAEs only (this cfg says architecture "
                         f"{cfg.get('architecture')!r}). Load and re-save it with SAELens 6")
    return apply_b_dec, rescale


def _fold_saelens_flags(w: dict, subtract_b_dec: bool, rescale: bool, path: Path) -> dict:
    """The four tensors of the plain neuroprobe SAE that computes what SAELens computes.

    ``apply_b_dec_to_input=false``: SAELens encodes ``x @ W_enc + b_enc``, which is
    ``(x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc)``.  ``rescale_acts_by_decoder_norm=true``
    (TopK): SAELens encodes ``topk(pre * n)`` and decodes ``(f / n) @ W_dec + b_dec`` with
    ``n_i = ||W_dec[i]||``, which is the SAE with ``W_enc * n``, ``b_enc * n``, ``W_dec / n``
    (what SAELens's own ``fold_W_dec_norm`` does).  Computed in float64, stored in the
    file's dtype.
    """
    if subtract_b_dec and not rescale:
        return w
    dt = w["W_enc"].dtype
    W_enc, W_dec, b_enc, b_dec = (w[n].double() for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    if not subtract_b_dec:
        b_enc = b_enc + b_dec @ W_enc
    if rescale:
        n = W_dec.norm(dim=1)
        if bool((n == 0).any()):
            raise NeuroprobeError(
                f"{path}: rescale_acts_by_decoder_norm=true, but decoder rows "
                f"{torch.nonzero(n == 0).flatten()[:10].tolist()} have norm 0 (SAELens would "
                "divide by 0); the file is corrupt."
            )
        W_enc, b_enc, W_dec = W_enc * n, b_enc * n, W_dec / n[:, None]
    return {"W_enc": W_enc.to(dt), "W_dec": W_dec.to(dt), "b_enc": b_enc.to(dt),
            "b_dec": w["b_dec"]}


def _load_saelens(p: Path, cfg: dict, cfg_path: Path) -> SAE:
    arch = _need(cfg, "architecture", cfg_path)
    if arch not in _SAELENS_ARCH:
        raise NeuroprobeError(
            f"{cfg_path}: architecture {arch!r} is not supported; neuroprobe reads "
            f"{sorted(_SAELENS_ARCH)} (SAELens names)."
        )
    d_in, d_sae = _need_int(cfg, "d_in", cfg_path), _need_int(cfg, "d_sae", cfg_path)
    subtract_b_dec, rescale = _saelens_semantics(cfg, cfg_path, arch)
    meta = dict(cfg.get("metadata") or {})
    k = _need_int(cfg, "k", cfg_path) if arch == "topk" else None
    w = _read_tensors(p / _SAELENS_W)
    sae = SAE(d_in, d_sae, _SAELENS_ARCH[arch], k=k, hook_name=meta.get("hook_name") or None,
              model_name=meta.get("model_name") or "",
              metadata={kk: v for kk, v in meta.items() if kk not in ("hook_name", "model_name")})
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,),
              "b_dec": (d_in,)}
    extra = sorted(set(w) - set(shapes))
    if extra:
        raise NeuroprobeError(
            f"{p / _SAELENS_W} holds tensors {extra} besides W_enc, W_dec, b_enc, b_dec; a "
            f"{arch!r} SAELens SAE has only those four, so this file is of another kind "
            "(e.g. a JumpReLU threshold or a fine-tuning scale) that neuroprobe cannot honour."
        )
    w = {name: _expect(w, name, shape, p / _SAELENS_W) for name, shape in shapes.items()}
    w = _fold_saelens_flags(w, subtract_b_dec, rescale, p / _SAELENS_W)
    with torch.no_grad():
        for name in shapes:
            setattr(sae, name, torch.nn.Parameter(w[name].clone()))
    return sae


def _load_sparsify(p: Path, cfg: dict, cfg_path: Path) -> SAE:
    act = cfg.get("activation", "topk")
    if act != "topk":
        raise NeuroprobeError(
            f"{cfg_path}: activation {act!r} is not supported; neuroprobe reads sparsify's "
            "'topk' SAEs."
        )
    # each of these adds a term to the output (or changes the target) that the four tensors
    # do not hold
    for key in ("skip_connection", "transcode", "embed_skip", "gram_lookup"):
        if cfg.get(key):
            raise NeuroprobeError(
                f"{cfg_path}: {key}={cfg[key]!r} is not supported: skip connections, "
                "transcoders and n-gram lookups are not plain SAEs (neuroprobe reads "
                "encoder + TopK + W_dec + b_dec only)."
            )
    d_in = _need_int(cfg, "d_in", cfg_path)
    d_sae = _need_int(cfg, "num_latents", cfg_path) or d_in * _need_int(
        cfg, "expansion_factor", cfg_path)
    k = _need_int(cfg, "k", cfg_path)
    w = _read_tensors(p / _SPARSIFY_W)
    sae = SAE(d_in, d_sae, "topk", k=k)
    path = p / _SPARSIFY_W
    with torch.no_grad():
        sae.W_enc = torch.nn.Parameter(
            _expect(w, "encoder.weight", (d_sae, d_in), path).T.contiguous().clone())
        sae.b_enc = torch.nn.Parameter(_expect(w, "encoder.bias", (d_sae,), path).clone())
        sae.W_dec = torch.nn.Parameter(_expect(w, "W_dec", (d_sae, d_in), path).clone())
        sae.b_dec = torch.nn.Parameter(_expect(w, "b_dec", (d_in,), path).clone())
    return sae


def _check_sae_at_hook(model, sae, hook, *, argname: str = "hook") -> str:
    """``sae`` is an SAE whose ``d_in`` is the width of ``hook`` (a hook name of ``model``;
    the SAE's own hook when None); warns when its weights are not finite.  Returns the hook."""
    from neuroprobe.core.engine import hook_width
    from neuroprobe.core.hooks import resolve_hooks
    from neuroprobe.core.validation import warn_if_not_finite

    if not isinstance(sae, SAE):
        raise NeuroprobeError(
            f"sae must be an SAE (npb.SAE, train_sae or load_sae); got {type(sae).__name__}."
        )
    hook = hook if hook is not None else sae.hook_name
    if not hook:
        raise NeuroprobeError(
            "the SAE has no hook_name; set sae.hook_name (or pass "
            f"{argname}='blocks.L.hook_resid_post') to the hook it was trained on."
        )
    if not isinstance(hook, str):
        raise NeuroprobeError(f"{argname} must be one hook name (str); got {hook!r}.")
    req = resolve_hooks(model, [hook], argname=argname)
    if len(req) != 1:
        raise NeuroprobeError(f"{argname}={hook!r} must name exactly one hook point.")
    width = hook_width(model, req[0].canonical)
    if width != sae.d_in:
        raise NeuroprobeError(
            f"the SAE has d_in={sae.d_in}, but hook {hook!r} has width {width}; use the SAE "
            "trained at this hook (or the hook whose output has that width)."
        )
    for n in ("W_enc", "W_dec", "b_enc", "b_dec"):
        if not warn_if_not_finite(getattr(sae, n).detach(), f"the SAE's {n}"):
            break
    return hook
