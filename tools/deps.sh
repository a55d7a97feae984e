#!/usr/bin/env bash
# Installs the Debian packages listed in tools/debian-packages.txt that are not
# installed yet. Idempotent: does nothing (and needs no network) when all are present.
# As root it runs apt-get; otherwise it prints the command to run and fails.
# A line "package:command" counts as present when that command is on PATH too
# (npm comes with NodeSource's nodejs, which conflicts with Debian's npm package).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
list="$here/debian-packages.txt"
missing=()
while read -r pkg; do
  case "$pkg" in ''|'#'*) continue ;; esac
  cmd=""
  case "$pkg" in *:*) cmd=${pkg#*:}; pkg=${pkg%%:*} ;; esac
  if [ -n "$cmd" ] && command -v "$cmd" > /dev/null 2>&1; then
    continue
  fi
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done < "$list"
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: not root; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "deps: installed ${missing[*]}"
