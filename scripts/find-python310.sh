#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter (the target's version: Ubuntu 22.04) or fail with one line that
# says what to install and how to point at it. Debian 12 ships no 3.10. Looks, in order, at: $PYTHON310 (only
# there when set), python3.10 on PATH, /usr/local/bin, pyenv's builds ($PYENV_ROOT, ~/.pyenv, /root/.pyenv),
# uv's managed Pythons. With --obtain, when none is found, asks uv to download one (`uv python install 3.10`:
# uv from PATH, or from PyPI into .cache/uv; the download comes from GitHub, so it works only where that is
# reachable).
#   scripts/find-python310.sh [--obtain]
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1

obtain=0
[[ "${1:-}" == --obtain ]] && obtain=1
how="install one (pyenv install 3.10, or uv python install 3.10 where GitHub is reachable) and point at it: PYTHON310=/path/to/python3.10"

# The interpreter's real path when it is a 3.10 (a pyenv shim resolves to the build it runs), else nothing.
real310() {
  "$1" -c 'import sys; print(sys.executable) if sys.version_info[:2] == (3, 10) else sys.exit(1)' 2>/dev/null
}

if [[ -n "${PYTHON310:-}" ]]; then
  p="$(command -v -- "$PYTHON310" 2>/dev/null || true)"
  if [[ -n "$p" ]] && real310 "$p"; then exit 0; fi
  echo "find-python310: PYTHON310=$PYTHON310 is not a Python 3.10 interpreter: $how" >&2
  exit 1
fi

uv_bins() {
  command -v uv 2>/dev/null || true
  [[ -x .cache/uv/bin/uv ]] && echo .cache/uv/bin/uv
  return 0
}

candidates() {
  command -v python3.10 2>/dev/null || true
  echo /usr/local/bin/python3.10
  local root
  for root in "${PYENV_ROOT:-}" "${HOME:-}/.pyenv" /root/.pyenv; do
    [[ -n "$root" && -d "$root/versions" ]] || continue
    find "$root/versions" -mindepth 3 -maxdepth 3 -path "$root/versions/3.10*/bin/python3.10" 2>/dev/null | sort -rV
  done
  local uv
  while read -r uv; do
    if [[ -n "$uv" ]]; then "$uv" python find --no-python-downloads 3.10 2>/dev/null || true; fi
  done < <(uv_bins)
  find "${XDG_DATA_HOME:-${HOME:-/root}/.local/share}/uv/python" -mindepth 3 -maxdepth 3 \
    -path '*/cpython-3.10*/bin/python3.10' 2>/dev/null | sort -rV
  return 0
}

search() {
  local c
  while read -r c; do
    [[ -n "$c" && -x "$c" ]] || continue
    real310 "$c" && return 0
  done < <(candidates)
  return 1
}

search && exit 0

if ((obtain)); then
  uv="$(uv_bins | head -n1)"
  if [[ -z "$uv" ]] && command -v python3 >/dev/null && python3 -m venv .cache/uv >/dev/null 2>&1; then
    echo "find-python310: no Python 3.10 here; installing uv from PyPI into .cache/uv to download one" >&2
    .cache/uv/bin/python -m pip install -q --disable-pip-version-check uv >/dev/null 2>&1 && uv=.cache/uv/bin/uv
  fi
  if [[ -n "$uv" ]]; then
    echo "find-python310: uv python install 3.10" >&2
    if "$uv" python install 3.10 >/dev/null 2>&1 && search; then exit 0; fi
    echo "find-python310: no Python 3.10 found, and uv could not download one (no access to GitHub?): $how" >&2
    exit 1
  fi
fi
echo "find-python310: no Python 3.10 found (Debian 12 has none): $how" >&2
exit 1
