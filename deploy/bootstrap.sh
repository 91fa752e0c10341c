#!/bin/sh
# Creates (or re-creates) the service accounts from the passwords in the environment.
# Run once per deployment by the `bootstrap` service of docker-compose.yml; idempotent.
set -eu
account() {
  name=$1; password=$2; shift 2
  stargazer admin credential remove "$name" >/dev/null 2>&1 || true
  printf '%s\n' "$password" | stargazer admin credential add "$name" --password-stdin "$@"
}
account admin "$ADMIN_PASSWORD" --admin rw --api rw --mq rw
account bot-telegram "$BOT_PASSWORD" --api rw --mq ro
account worker "$WORKER_PASSWORD" --coordinator ro --mq rw
account middleware "$MIDDLEWARE_PASSWORD" --mq rw
echo "bootstrap: service accounts ready"
