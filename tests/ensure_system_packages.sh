#!/usr/bin/env bash
# `make test` on a fresh machine: Debian's chromium for the browser smoke test (tests/test_ui.py). Installs
# it when missing (apt, as root or through sudo); when that is impossible it says so, and the test is skipped
# with the same reason.
set -uo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then as_root=(); elif command -v sudo >/dev/null 2>&1; then as_root=(sudo -n); else
  echo "chromium is not installed and this user cannot install it: the browser smoke test will be skipped" >&2
  exit 0
fi
echo "installing Debian's chromium for the browser smoke test" >&2
if ! "${as_root[@]}" apt-get install -y -q chromium >/dev/null 2>&1; then
  "${as_root[@]}" apt-get update -q >/dev/null 2>&1
  "${as_root[@]}" apt-get install -y -q chromium >/dev/null 2>&1 \
    || echo "chromium could not be installed: the browser smoke test will be skipped" >&2
fi
exit 0
