#!/usr/bin/env bash
# Starts what the test suite talks to, if it is not already running:
#   - RabbitMQ on 127.0.0.1:5672 (guest/guest), from the machine's Debian package;
#   - SecantusDB, a MongoDB-wire-compatible server, on 127.0.0.1:27017 (in memory),
#     installed from PyPI into .venv-mongo.
# Idempotent: safe to run again while both are up.
set -euo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 120); do
    port_open "$port" && return 0
    sleep 1
  done
  echo "test-services: $what did not open port $port within 120 s" >&2
  return 1
}

if ! port_open 5672; then
  echo "test-services: starting RabbitMQ"
  rabbitmq-server -detached
fi
wait_port 5672 RabbitMQ
timeout 120 rabbitmqctl await_startup >/dev/null

if ! port_open 27017; then
  if [ ! -x .venv-mongo/bin/secantusd-py ]; then
    echo "test-services: installing SecantusDB into .venv-mongo"
    python3 -m venv .venv-mongo
    .venv-mongo/bin/pip install --quiet SecantusDB==0.7.0b3
  fi
  echo "test-services: starting SecantusDB on 127.0.0.1:27017"
  # Through scripts/secantusd.py, which keeps the server's per-write cost flat (see there).
  nohup .venv-mongo/bin/python scripts/secantusd.py --host 127.0.0.1 --port 27017 --storage-path :memory: \
    > "${TMPDIR:-/tmp}/secantusd.log" 2>&1 &
fi
wait_port 27017 SecantusDB
echo "test-services: RabbitMQ and SecantusDB are up"
