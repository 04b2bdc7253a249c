#!/usr/bin/env bash
# Creates .venv with the real Python clients the compatibility tests drive:
# pymesos 0.3.15 (with kazoo 2.10.0, its ZooKeeper detector) and the marathon
# client 0.13.0. Idempotent.
#
# http-parser 0.9.0 (a pymesos dependency) ships C generated for old Pythons
# that no longer compiles on 3.11; its pure-Python parser, which pymesos
# supports, is installed instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$venv/bin/python" -c 'import http_parser' 2>/dev/null; then
  work=$(mktemp -d)
  "$pip" download -q --no-deps --no-binary :all: http-parser==0.9.0 -d "$work"
  tar -xzf "$work"/http-parser-0.9.0.tar.gz -C "$work"
  sed -i 's/run_setup(not IS_PYPY)/run_setup(False)/' "$work/http-parser-0.9.0/setup.py"
  "$pip" install -q "$work/http-parser-0.9.0"
  rm -rf "$work"
fi
"$pip" install -q pymesos==0.3.15 marathon==0.13.0 kazoo==2.10.0
"$venv/bin/python" -c 'import pymesos; from http_parser.http import HttpParser; print("pymesos", pymesos.__file__)'
"$venv/bin/python" -c 'import marathon; print("marathon", marathon.__file__)'
"$venv/bin/python" -c 'import kazoo.client; print("kazoo", kazoo.__file__)'
