#!/usr/bin/env bash
# Validates docker-compose.yml with Debian's docker-compose (installed if missing), using
# .env.example as the environment, in a scratch copy so no .env is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-compose >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r docker-compose.yml deploy "$scratch/"
cp .env.example "$scratch/.env"
(cd "$scratch" && docker-compose config --quiet)
echo "check-compose: docker-compose.yml is valid"
