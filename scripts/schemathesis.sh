#!/usr/bin/env bash
# Runs Schemathesis (every check) against a live api on SQLite in a temporary directory,
# authenticated as an all-permissions service account created through the CLI, and fails
# on any failure. Schemathesis comes from PyPI into .venv-schemathesis (pinned below).
# Options: SCHEMATHESIS_EXAMPLES (test cases per operation, default 15),
# SCHEMATHESIS_SEED (default 14), STARGAZER_BIN (a built binary; default: cargo build the
# debug one). About 25 s with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
examples=${SCHEMATHESIS_EXAMPLES:-15}

venv=.venv-schemathesis
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

bin=${STARGAZER_BIN:-}
if [ -z "$bin" ]; then
  cargo build -q --locked -p stargazer
  bin=target/debug/stargazer
fi

scratch=$(mktemp -d)
api_pid=
cleanup() {
  if [ -n "$api_pid" ]; then kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

# Only this script's settings: the developer's STARGAZER_* variables stay out.
for var in $(env | grep -o '^STARGAZER_[A-Z0-9_]*' || true); do unset "$var"; done
export STARGAZER_SQLITE_PATH="$scratch/stargazer.db"
export STARGAZER_LOG_LEVEL=warn
# A free port on loopback.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export STARGAZER_API__LISTEN="127.0.0.1:$port"
# Cheap hashes: every generated request verifies a password.
export STARGAZER_API__PBKDF2_ITERATIONS=1000
# Negative-auth checks send many wrong passwords; do not slow them down.
export STARGAZER_API__LOGIN_DELAY_MAX_MS=0

password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
printf '%s\n' "$password" | "$bin" admin credential add schemathesis --password-stdin \
  --api rw --admin rw --mq rw --coordinator rw >/dev/null

"$bin" api >"$scratch/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$api_pid" 2>/dev/null; then cat "$scratch/api.log"; exit 1; fi
  sleep 0.1
done

status=0
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --checks all \
  --max-examples "$examples" \
  --workers 1 \
  --seed "${SCHEMATHESIS_SEED:-14}" \
  --auth "schemathesis:$password" \
  --request-timeout 10 \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures found (api log follows)" >&2
  tail -n 50 "$scratch/api.log" >&2
  exit "$status"
fi
echo "schemathesis: 0 failures"
