#!/usr/bin/env bash
# Makes target/test-venv: a Python virtual environment with what the end-to-end tests run
# (crates/gencol/tests/python/requirements.txt). Run by .ci/run before the tests, and by the
# tests themselves when it is missing. Idempotent; safe to run from two tests at once.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/test-venv"
mkdir -p "$root/target"
exec 9>"$root/target/test-venv.lock"
flock 9
if [ -f "$venv/.ready" ] && cmp -s "$root/crates/gencol/tests/python/requirements.txt" "$venv/.ready"; then
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/crates/gencol/tests/python/requirements.txt"
cp "$root/crates/gencol/tests/python/requirements.txt" "$venv/.ready"
