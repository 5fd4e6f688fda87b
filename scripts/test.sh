#!/usr/bin/env bash
# The README's test command: installs everything the tests need on a fresh machine, then runs the checks and pytest.
# System packages (Debian): pgbouncer for the pooler tests, nodejs/npm for supabase-js, chromium for the browser
# tests (driven by playwright-core from npm, no browser download). Python packages into .venv,
# npm packages into node_modules. (The fixture scripts also need espeak-ng, sox, ffmpeg and chromium; the tests
# use the committed fixtures.)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

need_apt=()
for cmd in pgbouncer:pgbouncer node:nodejs npm:npm chromium:chromium; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${cmd%%:*}" ] || need_apt+=("${cmd#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Node $node_major found; supabase-js needs Node 20 or newer: install a newer Node first" >&2
  exit 1
fi

step "python environment"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[local,dev]'

step "npm packages"
npm ci --no-audit --no-fund --loglevel=error

step "ruff and mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

step "pytest"
.venv/bin/python -m pytest "$@"
