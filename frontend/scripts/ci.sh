#!/usr/bin/env bash
# The frontend's test command: installs the npm packages (only when package-lock.json
# changed since the last install), builds the static export and runs the end-to-end test
# (which builds and starts the fixture api with cargo and drives Debian's Chromium).
# Idempotent; run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
export NEXT_TELEMETRY_DISABLED=1

chromium=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "frontend ci: installing Debian's chromium (and CJK fonts for readable screenshots)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
  else
    echo "frontend ci: $chromium is missing; install Debian's chromium package (or set CHROMIUM_PATH)" >&2
    exit 1
  fi
fi

lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.stargazer-lock-sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  echo "frontend ci: npm ci"
  npm ci --no-audit --no-fund
  echo "$lock_sum" > "$stamp"
fi

npm run build
npm run e2e
