#!/bin/sh
# The official rabbitmq image's entrypoint, for Debian's rabbitmq-server (setpriv instead of gosu).
set -e
if [ "$1" = 'rabbitmq-server' ] && [ "$(id -u)" = '0' ]; then
    # The Erlang cookie exists before anything else can run: a healthcheck's
    # `rabbitmq-diagnostics` (root, HOME=/var/lib/rabbitmq) would otherwise create it first,
    # owned by root, and the server could not read it.
    cookie=/var/lib/rabbitmq/.erlang.cookie
    if [ ! -s "$cookie" ]; then
        (umask 077; tr -dc '[:upper:]' </dev/urandom | head -c 20 >"$cookie")
    fi
    chmod 0400 "$cookie"
    find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq:rabbitmq '{}' +
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$0" "$@"
fi
exec "$@"
