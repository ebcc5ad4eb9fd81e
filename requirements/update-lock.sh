#!/usr/bin/env bash
# `make lock`: re-resolve every dependency to the newest release the registry serves, run the
# whole test suite in that fresh venv, and only if it passes write requirements/lock.txt.
#
#   make lock                                   # newest of everything pyproject.toml allows
#   EXTRA="transformers==5.23.0" make lock      # ... with extra pins
#
# torch stays at the version below: pip takes a local CPU build of it on these machines, and
# a newer release would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${LOCK_VENV:-.venv-lock}
TORCH=2.13.0
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install "torch==$TORCH"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -e ".[test,dask]" ${EXTRA:-}
"$VENV/bin/python" -m pip install --no-deps -r requirements/no-deps.txt
"$VENV/bin/python" -m pip check || true  # report; the no-deps packages declare unwanted deps
echo "== running the whole test suite against the newly resolved set"
"$VENV/bin/python" -m pytest -q
# whether TransformerLens's KV cache is exact with this set (if not, generation is slower)
"$VENV/bin/python" - <<'PY'
import neuroprobe as npb
from neuroprobe._generate import _cache_is_exact
ok = _cache_is_exact(npb.load_model("smollm2-135m"))
print("KV-cache generation exact on SmolLM2:", ok, "" if ok else "(generation falls back to "
      "full forward passes: exact, about 4x slower)")
PY
{
  echo "# The tested environment: every package at the version the whole suite passed with."
  echo "# Written by \`make lock\` (requirements/update-lock.sh) on $(date -u +%Y-%m-%d) with"
  echo "# $("$VENV/bin/python" --version); installed by \`make demo\` / \`make test\` with --no-deps."
  "$VENV/bin/python" -m pip freeze --all --exclude-editable \
    | grep -v '^pip==' | sed -E 's/^torch==([^+]*)\+.*/torch==\1/'
} > requirements/lock.txt.new
mv requirements/lock.txt.new requirements/lock.txt
echo "== requirements/lock.txt updated; review with: git diff requirements/lock.txt"
