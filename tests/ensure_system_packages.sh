#!/usr/bin/env bash
# `make test` on a fresh machine: Debian's chromium for the browser smoke test (tests/test_ui.py) and
# Debian's postgresql for Dagster on PostgreSQL (tests/test_production_path.py). Installs what is missing
# (apt, as root or through sudo); when that is impossible it says so, and those tests are skipped with the
# same reason.
set -uo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then as_root=(); elif command -v sudo >/dev/null 2>&1; then as_root=(sudo -n); else
  echo "${missing[*]} not installed and this user cannot install them: their tests will be skipped" >&2
  exit 0
fi
echo "installing Debian's ${missing[*]} for the tests" >&2
if ! "${as_root[@]}" apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
  "${as_root[@]}" apt-get update -q >/dev/null 2>&1
  "${as_root[@]}" apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || echo "${missing[*]} could not be installed: their tests will be skipped" >&2
fi
exit 0
