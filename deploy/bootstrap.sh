#!/bin/sh
# Creates (or re-creates) the service accounts from the passwords in the environment.
# Run once per deployment by the `bootstrap` service of docker-compose.yml; idempotent.
# Refuses (exit 2, before touching anything) a password that is missing (the Discord and
# QQ bots' may be left empty: no account), a known
# placeholder such as the `change-me` of .env.example, or shorter than 16 characters.
set -eu

MIN_LENGTH=16

check() {
  name=$1
  eval "value=\${$name:-}"
  lowered=$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')
  case "$lowered" in
    "")
      echo "bootstrap: $name is not set; put a long random password in .env" >&2
      exit 2 ;;
    change-me|changeme|change_me|changeit|password|passw0rd|secret|admin|guest|example|placeholder|*change-me*|*changeme*|xxx*)
      echo "bootstrap: $name is still a placeholder; put a long random password in .env (openssl rand -hex 24)" >&2
      exit 2 ;;
  esac
  if [ "${#value}" -lt "$MIN_LENGTH" ]; then
    echo "bootstrap: $name is shorter than $MIN_LENGTH characters; use a long random password (openssl rand -hex 24)" >&2
    exit 2
  fi
}

# Every password is checked before any account changes.
for name in ADMIN_PASSWORD TOPOLOGY_PASSWORD BOT_PASSWORD WORKER_PASSWORD \
  MIDDLEWARE_DELAY_PASSWORD MIDDLEWARE_TRANSLATE_PASSWORD MIDDLEWARE_LIVE_CHECK_PASSWORD; do
  check "$name"
done
# The Discord and QQ bots run only in their compose profiles: their accounts are made
# when their passwords are set (and then checked like the others).
for name in BOT_DISCORD_PASSWORD BOT_QQ_PASSWORD; do
  eval "value=\${$name:-}"
  if [ -n "$value" ]; then
    check "$name"
  fi
done

account() {
  name=$1; password=$2; shift 2
  stargazer admin credential remove "$name" >/dev/null 2>&1 || true
  printf '%s\n' "$password" | stargazer admin credential add "$name" --password-stdin "$@"
}
# What each account may do on the broker is docs/ARCHITECTURE.md §8: a consumer owns its
# queue (--queue); only `topology` (admin rw + mq rw, for `stargazer admin broker setup`)
# may declare or delete the exchanges and other roles' queues.
account admin "$ADMIN_PASSWORD" --admin rw --api rw
account topology "$TOPOLOGY_PASSWORD" --admin rw --mq rw
account bot-telegram "$BOT_PASSWORD" --api rw --mq ro --queue bot.telegram
if [ -n "${BOT_DISCORD_PASSWORD:-}" ]; then
  account bot-discord "$BOT_DISCORD_PASSWORD" --api rw --mq ro --queue bot.discord
else
  echo "bootstrap: BOT_DISCORD_PASSWORD is not set; no bot-discord account (the discord profile needs one)"
fi
if [ -n "${BOT_QQ_PASSWORD:-}" ]; then
  account bot-qq "$BOT_QQ_PASSWORD" --api rw --mq ro --queue bot.qq
else
  echo "bootstrap: BOT_QQ_PASSWORD is not set; no bot-qq account (the qq profile needs one)"
fi
account worker "$WORKER_PASSWORD" --coordinator ro --mq rw
account middleware-delay "$MIDDLEWARE_DELAY_PASSWORD" --mq rw --queue middleware.delay
account middleware-translate "$MIDDLEWARE_TRANSLATE_PASSWORD" --mq rw --queue middleware.translate
account middleware-live-check "$MIDDLEWARE_LIVE_CHECK_PASSWORD" --mq rw --queue middleware.live_check
echo "bootstrap: service accounts ready"
