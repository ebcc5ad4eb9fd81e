"""Resolving hook requests against a model's hook points: the one resolver of hook names.

TransformerBridge models expose canonical hook names (``blocks.0.hook_out``) and the
classic TransformerLens aliases (``blocks.0.hook_resid_post``).  A request may name either,
a glob over both, or a callable; every request resolves to a list of
:class:`HookRequest` with one entry per *canonical* hook point, so an alias and its
canonical name never produce duplicate columns.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Union

import numpy as np

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.units import Directions, hook_layer
from neuroprobe.core.validation import check_index_list

#: what ``record(hooks=...)`` accepts as one entry
HookSpec = Union[str, Callable[[str], bool], Directions, tuple]


@dataclass(frozen=True)
class HookRequest:
    """One hook point to record: the name shown to users and the canonical point."""

    name: str  # the name users see (the alias they asked for, else the classic alias)
    canonical: str
    directions: Directions | None = None
    indices: np.ndarray | None = None  # subset of coordinates (neurons) to keep
    optional: bool = False  # matched by a glob/callable: skipped if it is not a per-token hook


def alias_map(model) -> dict[str, str]:
    """alias -> canonical hook name (empty for plain HookedRootModules)."""
    get = getattr(model, "_collect_hook_aliases_from_registry", None)
    if get is None:
        return {}
    try:
        return dict(get())
    except Exception:  # pragma: no cover - defensive against TL internals changing
        return {}


def _is_gated(model, canonical: str) -> bool:
    gated = getattr(model, "_gated_hook_reason", None)
    return bool(gated and gated(canonical))


def hook_names(model) -> list[str]:
    """Every hook name ``record`` accepts on ``model``: canonical names and aliases.

    Hook points that are switched off in the model's config (e.g. ``attn.hook_result``
    without ``use_attn_result``) are left out, since they never fire.

    Examples
    --------
    >>> import neuroprobe as npb
    >>> model = npb.load_model(dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
    ...                             d_vocab=50, n_ctx=16, act_fn="relu", seed=0))
    >>> "blocks.0.hook_resid_post" in npb.hook_names(model)
    True
    """
    check_hooked_model(model)
    canon = [k for k in model.hook_dict if not _is_gated(model, k)]
    aliases = alias_map(model)
    keep = set(canon)
    return canon + [a for a, c in aliases.items() if c in keep and a not in keep]


def check_hooked_model(model, name: str = "model") -> None:
    """Refuse anything without TransformerLens hook points (None, a string, a plain module)."""
    if not hasattr(model, "hook_dict"):
        hint = (" Load it first: model = npb.load_model(" + repr(model) + ")."
                if isinstance(model, str) else "")
        raise NeuroprobeError(
            f"{name} must be a TransformerBridge or HookedRootModule with hook points (from "
            f"npb.load_model); got {type(model).__name__}.{hint}"
        )


def _ordered(model) -> dict[str, int]:
    return {k: i for i, k in enumerate(model.hook_dict)}


def _glob(names: Sequence[str], pattern: str) -> list[str]:
    """The names a glob (or exact name) matches, in the order of ``names``."""
    return [n for n in names if fnmatchcase(n, pattern)]


def match_hook_names(names: Sequence[str], patterns: str | Sequence[str], *,
                     argname: str = "hooks") -> list[str]:
    """The names among ``names`` that ``patterns`` (exact names or globs) select.

    Pattern by pattern, each pattern's matches in the order of ``names``, without
    duplicates -- the order :func:`resolve_hooks` gives.  For lists of names that are not a
    model's hooks (a Recording's hooks, a ``hook_dict``); a pattern that matches nothing
    raises.

    Examples
    --------
    >>> from neuroprobe.core.hooks import match_hook_names
    >>> names = ["blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_pre"]
    >>> match_hook_names(names, ["blocks.1.*", "blocks.*.mlp.hook_pre"])
    ['blocks.1.mlp.hook_pre', 'blocks.0.mlp.hook_pre']
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    out: list[str] = []
    for p in patterns:
        hit = _glob(names, p)
        if not hit:
            raise NeuroprobeError(
                f"{argname}: pattern {p!r} matches no hook; closest valid names: "
                f"{_suggest(p.replace('*', '0'), names)}"
            )
        out += [h for h in hit if h not in out]
    return out


def _suggest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:
        layer = hook_layer(name)
        close = [n for n in names if hook_layer(n) == max(layer, 0)][:8]
    return ", ".join(repr(c) for c in close)


def resolve_hooks(model, hooks: HookSpec | Sequence[HookSpec] | None,
                  *, argname: str = "hooks") -> list[HookRequest]:
    """Resolve a ``hooks=`` argument to hook requests, in model order, without duplicates."""
    if hooks is None or (isinstance(hooks, (list, tuple)) and len(hooks) == 0
                         and not isinstance(hooks, Directions)):
        raise NeuroprobeError(
            f"{argname} is empty: name at least one hook, e.g. "
            f"{argname}=['blocks.*.hook_resid_post'] (see npb.hook_names(model))."
        )
    if isinstance(hooks, (str, Directions)) or callable(hooks) or _is_unit_tuple(hooks):
        hooks = [hooks]
    if not isinstance(hooks, Iterable) or isinstance(hooks, (bytes, dict)):
        raise NeuroprobeError(
            f"{argname} must be a hook name, a glob pattern, a callable, a Directions, a "
            f"(hook, indices) pair, or a list of them; got {type(hooks).__name__} {hooks!r}. "
            f"E.g. {argname}='blocks.*.hook_resid_post' (see npb.hook_names(model))."
        )
    hooks = list(hooks)
    if not hooks:
        raise NeuroprobeError(
            f"{argname} is empty: name at least one hook, e.g. "
            f"{argname}=['blocks.*.hook_resid_post'] (see npb.hook_names(model))."
        )
    names = hook_names(model)
    aliases = alias_map(model)
    valid = set(names)
    order = _ordered(model)
    canon_alias: dict[str, str] = {}
    for a, c in aliases.items():
        canon_alias.setdefault(c, a)  # first alias = the classic TransformerLens name

    def canonical(n: str) -> str:
        return aliases.get(n, n)

    def display(n_list: list[str], c: str) -> str:
        return canon_alias.get(c, c) if len(n_list) > 1 or n_list[0] == c else n_list[0]

    out: list[HookRequest] = []
    seen: set[tuple] = set()

    def add(req: HookRequest) -> None:
        key = (req.canonical, id(req.directions) if req.directions else None,
               None if req.indices is None else req.indices.tobytes())
        if key not in seen:
            seen.add(key)
            out.append(req)

    for spec in hooks:
        if isinstance(spec, Directions):
            if spec.hook not in valid:
                raise NeuroprobeError(
                    f"Directions(hook={spec.hook!r}): unknown hook; closest valid names: "
                    f"{_suggest(spec.hook, names)}"
                )
            add(HookRequest(spec.hook, canonical(spec.hook), directions=spec))
        elif _is_unit_tuple(spec):
            name, idx = spec
            if name not in valid:
                raise NeuroprobeError(
                    f"{argname}: unknown hook {name!r}; closest valid names: "
                    f"{_suggest(name, names)}"
                )
            if isinstance(idx, (int, np.integer)) and not isinstance(idx, (bool, np.bool_)):
                idx = [idx]  # one neuron
            idx = check_index_list(idx, f"{argname}: the indices of ({name!r}, ...)",
                                   what="neuron")
            add(HookRequest(name, canonical(name), indices=np.asarray(idx, dtype=np.int64)))
        elif isinstance(spec, str):
            if any(ch in spec for ch in "*?["):
                matched = _glob(names, spec)
                if not matched:
                    raise NeuroprobeError(
                        f"{argname}: pattern {spec!r} matches no hook; closest valid names: "
                        f"{_suggest(spec.replace('*', '0'), names)}"
                    )
                by_canon: dict[str, list[str]] = {}
                for n in matched:
                    by_canon.setdefault(canonical(n), []).append(n)
                for c in sorted(by_canon, key=lambda c: order.get(c, 1 << 30)):
                    add(HookRequest(display(by_canon[c], c), c, optional=True))
            elif spec in valid:
                add(HookRequest(spec, canonical(spec)))
            else:
                raise NeuroprobeError(
                    f"{argname}: unknown hook {spec!r}; closest valid names: "
                    f"{_suggest(spec, names)}. List them all with npb.hook_names(model)."
                )
        elif callable(spec):
            try:
                matched = [n for n in names if spec(n)]
            except Exception as e:  # noqa: BLE001 -- the user's callable, any error
                raise NeuroprobeError(
                    f"{argname}: the callable {spec!r} raised {type(e).__name__} ({e}) on a hook "
                    "name; it must take a name (str) and return True or False."
                ) from None
            if not matched:
                raise NeuroprobeError(f"{argname}: the callable {spec!r} selected no hook.")
            by_canon = {}
            for n in matched:
                by_canon.setdefault(canonical(n), []).append(n)
            for c in sorted(by_canon, key=lambda c: order.get(c, 1 << 30)):
                add(HookRequest(display(by_canon[c], c), c, optional=True))
        else:
            raise NeuroprobeError(
                f"{argname} entries must be hook names, glob patterns, callables, Directions "
                f"or (hook, indices) pairs; got {type(spec).__name__}: {spec!r}"
            )
    return out


def _is_unit_tuple(x) -> bool:
    return (
        isinstance(x, tuple)
        and len(x) == 2
        and isinstance(x[0], str)
        and not isinstance(x[1], str)
    )
