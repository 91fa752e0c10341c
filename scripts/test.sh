#!/usr/bin/env bash
# The whole test suite: every Rust crate's unit, contract, integration and end-to-end
# tests (against RabbitMQ and the MongoDB-wire test server, started here if absent), then
# Schemathesis against a live api, then the frontend's browser test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-services.sh
bash scripts/check-compose.sh
cargo test --workspace --locked --no-fail-fast
# Against the binary the tests above built: /openapi.json is exact, 0 failures of any check.
STARGAZER_BIN=target/debug/stargazer bash scripts/schemathesis.sh
bash frontend/scripts/ci.sh
