#!/usr/bin/env bash
# Installs the third-party tools the tests use, from Debian's packages, when they are absent.
# Usage: scripts/ensure-tools.sh TOOL... (tools: openssl)
set -euo pipefail
missing=()
for tool in "$@"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
((${#missing[@]} == 0)) && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
