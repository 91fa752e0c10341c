#!/bin/sh
# Entry point of the rabbitmq service in docker-compose.yml: writes rabbitmq.conf with the
# secret the api's internal listener expects (BROKER_AUTH_SECRET, the api's
# `auth_secret`), then starts the broker through the image's own entry point.
set -eu
secret=${BROKER_AUTH_SECRET:-}
case "$secret" in
  *[!A-Za-z0-9._~-]*)
    echo "start.sh: BROKER_AUTH_SECRET may hold only letters, digits and -._~" >&2; exit 2 ;;
esac
if [ "${#secret}" -lt 16 ]; then
  echo "start.sh: BROKER_AUTH_SECRET must be set, at least 16 characters" >&2; exit 2
fi
sed "s|\${BROKER_AUTH_SECRET}|$secret|g" /deploy/rabbitmq/rabbitmq.conf > /etc/rabbitmq/rabbitmq.conf
# The `cluster` profile's extra nodes find and join rabbit@rabbitmq at their first start.
if [ -n "${RABBITMQ_JOIN_CLUSTER:-}" ]; then
  cat /deploy/rabbitmq/cluster.conf >> /etc/rabbitmq/rabbitmq.conf
fi
exec docker-entrypoint.sh rabbitmq-server
