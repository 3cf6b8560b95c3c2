#!/usr/bin/env bash
# Installs the third-party tools the tests use, from Debian's packages, when they are absent.
# Usage: scripts/ensure-tools.sh TOOL[:PACKAGE]...   e.g. openssl promtool:prometheus
# A failed install is reported, not fatal: the tests that need a missing tool skip and say why.
set -uo pipefail
missing=()
for spec in "$@"; do
  tool=${spec%%:*}
  pkg=${spec#*:}
  command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "ensure-tools: installing ${missing[*]} (Debian packages) for the tests" >&2
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null; then
  echo "ensure-tools: could not install ${missing[*]}; tests that need them will skip" >&2
fi
exit 0
