#!/bin/bash
# TEST SCAFFOLDING: entrypoint of the PostgreSQL stand-in (.ci/standins/README.md).
# On the first start (no $PGDATA/PG_VERSION) it does what the official image's
# entrypoint does with POSTGRES_PASSWORD (required unless
# POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (default postgres),
# POSTGRES_DB (default: the user's name) and POSTGRES_HOST_AUTH_METHOD (default
# scram-sha-256 for every host; local socket connections are trusted). Then it
# runs the server as the postgres user. Arguments that start with `-` are
# options of postgres (a compose `command:`), as with the official image.
set -euo pipefail
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
log() { echo "stand-in entrypoint: $*" >&2; }

init() {
  local user=${POSTGRES_USER:-postgres}
  local db=${POSTGRES_DB:-$user}
  local auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    log "error: the database is uninitialized and the superuser password is not specified;" \
        "set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)"
    exit 1
  fi
  log "initialising $PGDATA"
  local pwfile
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host="$auth" >/dev/null
  rm -f "$pwfile"
  printf '\n# stand-in entrypoint: every other host\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    pg_ctl -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -q --username="$user" --dbname=postgres -v db="$db" <<<'CREATE DATABASE :"db";'
    pg_ctl -m fast -w stop >/dev/null
  fi
  log "initialised: database $db, user $user"
}

case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-}" = postgres ]; then
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then init; fi
fi
exec "$@"
