"""Write docs/api.md from the package: every public name of ``neuroprobe.__all__``, grouped
by the folder that defines it, with the first paragraph of its docstring (constants: their
value).

Run:  python docs/make_api.py        (tests/test_project.py checks the page lists every name)
"""

from __future__ import annotations

import inspect
from pathlib import Path

import neuroprobe as npb

PAGES = {  # folder -> (title, topic page)
    "core": ("models, capture, recordings, probes, units", "capture.md"),
    "glm": ("block designs, mass-univariate GLMs, contrasts, second level", "glm.md"),
    "networks": ("stimuli, functional networks, the experiment, localizers, ablation",
                 "functional_networks.md"),
    "mae": ("corpora, max-activating and minimal activating examples, local search", "mae.md"),
    "polytope": ("spline codes, polytope density, clusters", "polytope.md"),
    "spectrum": ("eigenspectra, power laws, random projections", "spectrum.md"),
    "dictionary": ("sparse autoencoders, SAE features as units, comparing bases",
                   "dictionary.md"),
    "distributed": ("shards on workers, exact tree reduction", "distributed.md"),
    "testbeds": ("small networks and stimuli for experiments and tests", "architecture.md"),
}


def _folder(obj) -> str:
    mod = getattr(obj, "__module__", None) or "neuroprobe.core"
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "core"


def _kind(obj) -> str:
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "constant"


def _summary(name: str, obj) -> str:
    if _kind(obj) == "constant":
        text = repr(obj)
        return f"`{text if len(text) < 70 else text[:66] + ' ...'}`"
    # the first paragraph, joined: a summary sentence wrapped over two lines stays whole
    para = (inspect.getdoc(obj) or "").strip().split("\n\n")[0]
    return " ".join(para.split()).replace("|", "\\|")


def main() -> None:
    rows: dict[str, list[str]] = {k: [] for k in PAGES}
    for name in npb.__all__:
        obj = getattr(npb, name)
        folder = _folder(obj) if _kind(obj) != "constant" else _const_folder(name)
        rows.setdefault(folder, []).append(f"| `{name}` | {_kind(obj)} | {_summary(name, obj)} |")
    out = [
        "# API reference", "",
        "Every public name of `neuroprobe` (its `__all__`), grouped by the folder that defines "
        "it, with the summary of its docstring (constants: their value). `help(npb.NAME)` "
        "shows the full numpydoc text; the topic pages explain how the pieces fit together, "
        "and [architecture.md](architecture.md) how the folders are layered. This page is "
        "written by `python docs/make_api.py`; `tests/test_project.py` checks that it lists "
        "every public name, and every name of a subpackage's `__all__`.", "",
    ]
    for folder, lines in rows.items():
        if not lines:
            continue
        title, page = PAGES.get(folder, (folder, "getting_started.md"))
        out += [f"## `neuroprobe.{folder}` — {title} (see [{page}]({page}))", "",
                "| name | kind | summary |", "|---|---|---|", *lines, ""]
    Path(__file__).with_name("api.md").write_text("\n".join(out))


def _const_folder(name: str) -> str:
    import importlib

    for folder in PAGES:
        try:
            mod = importlib.import_module(f"neuroprobe.{folder}")
        except ImportError:
            continue
        if name in getattr(mod, "__all__", ()) or hasattr(mod, name) and folder != "core":
            return folder
    return "core"


if __name__ == "__main__":
    main()
