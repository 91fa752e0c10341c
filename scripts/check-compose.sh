#!/usr/bin/env bash
# Validates docker-compose.yml with Debian's docker-compose (installed if missing), using
# .env.example as the environment, in a scratch copy so no .env is left behind; then
# scripts/check-compose.py checks that each service gets only its own secrets, that
# RabbitMQ and MongoDB stay on loopback, the ignore files, and bootstrap's refusal of
# placeholder passwords.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-compose >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r docker-compose.yml deploy .env.example "$scratch/"
cp .env.example "$scratch/.env"
(cd "$scratch" && docker-compose config --quiet)
echo "check-compose: docker-compose.yml is valid"
# Debian's docker-compose ships python3-yaml; prefer the interpreter it runs on.
python=/usr/bin/python3
python3 -c 'import yaml' 2>/dev/null && python=python3
"$python" scripts/check-compose.py "$scratch"
