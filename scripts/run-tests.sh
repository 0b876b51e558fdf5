#!/usr/bin/env bash
# Run the whole test suite on Python 3.10 (.venv). pytest's exit code 5 ("no tests collected") is a
# failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
.venv/bin/python -m pytest -ra --durations=15 "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run-tests: pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit $rc
