#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter (the target's version: Ubuntu 22.04) or fail saying why.
set -euo pipefail
for c in "${PYTHON310:-}" python3.10 /usr/bin/python3.10 /root/.pyenv/versions/3.10*/bin/python3.10; do
  [[ -n "$c" ]] || continue
  p="$(command -v "$c" 2>/dev/null || true)"
  [[ -n "$p" ]] || continue
  if "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then echo "$p"; exit 0; fi
done
echo "find-python310: no Python 3.10 found (set PYTHON310=/path/to/python3.10)" >&2
exit 1
