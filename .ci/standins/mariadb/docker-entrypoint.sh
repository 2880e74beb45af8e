#!/bin/bash
# TEST SCAFFOLDING: entrypoint of the MariaDB stand-in (.ci/standins/README.md).
# On the first start (empty /var/lib/mysql) it does what the official image's
# entrypoint does with these variables, each also read as MYSQL_*:
#   MARIADB_ROOT_PASSWORD / MARIADB_ALLOW_EMPTY_ROOT_PASSWORD /
#   MARIADB_RANDOM_ROOT_PASSWORD (one is required), MARIADB_DATABASE,
#   MARIADB_USER, MARIADB_PASSWORD (user gets every privilege on the database);
# it also creates the `healthcheck` user that healthcheck.sh logs in as. Then it
# runs mariadbd as the mysql user. Arguments that start with `-` are options
# of mariadbd (a compose `command:`), as with the official image.
set -euo pipefail
datadir=/var/lib/mysql
socket=/run/mysqld/mysqld.sock

var() { local m="MARIADB_$1" y="MYSQL_$1"; printf '%s' "${!m:-${!y:-}}"; }
sql_str() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }
# shellcheck disable=SC2016 # backquotes are SQL identifier quotes here
sql_id() { printf '`%s`' "${1//\`/\`\`}"; }
log() { echo "stand-in entrypoint: $*" >&2; }

init() { # mariadbd options
  local root_pw allow_empty random db user pw health_pw
  root_pw=$(var ROOT_PASSWORD); allow_empty=$(var ALLOW_EMPTY_ROOT_PASSWORD)
  random=$(var RANDOM_ROOT_PASSWORD)
  db=$(var DATABASE); user=$(var USER); pw=$(var PASSWORD)
  if [ -z "$root_pw" ] && [ -z "$allow_empty" ] && [ -z "$random" ]; then
    log "error: the database is uninitialized and no root password option is set;" \
        "set one of MARIADB_ROOT_PASSWORD, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD, MARIADB_RANDOM_ROOT_PASSWORD"
    exit 1
  fi
  if [ -n "$random" ] && [ -z "$root_pw" ]; then
    root_pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    log "GENERATED ROOT PASSWORD: $root_pw"
  fi
  if [ -n "$user" ] && [ -z "$pw" ]; then
    log "error: MARIADB_USER is set but MARIADB_PASSWORD is not"; exit 1
  fi
  health_pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

  log "initialising $datadir"
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db >/dev/null
  mariadbd --user=mysql --datadir="$datadir" "$@" --skip-networking --socket="$socket" &
  local pid=$!
  for _ in $(seq 1 60); do
    mariadb-admin --socket="$socket" ping >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { log "error: the temporary server exited"; exit 1; }
    sleep 1
  done
  {
    echo "SET @@SESSION.SQL_LOG_BIN=0;"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD($(sql_str "$root_pw")) OR unix_socket;"
    echo "CREATE USER 'root'@'%' IDENTIFIED BY $(sql_str "$root_pw");"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    for host in 127.0.0.1 ::1 localhost; do
      echo "CREATE USER 'healthcheck'@'$host' IDENTIFIED BY $(sql_str "$health_pw");"
    done
    if [ -n "$db" ]; then echo "CREATE DATABASE IF NOT EXISTS $(sql_id "$db");"; fi
    if [ -n "$user" ]; then
      echo "CREATE USER $(sql_str "$user")@'%' IDENTIFIED BY $(sql_str "$pw");"
      if [ -n "$db" ]; then echo "GRANT ALL ON $(sql_id "$db").* TO $(sql_str "$user")@'%';"; fi
    fi
    echo "FLUSH PRIVILEGES;"
  } | mariadb --socket="$socket" -uroot
  printf '[client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\n' "$socket" "$health_pw" \
    > "$datadir/.my-healthcheck.cnf"
  chown mysql:mysql "$datadir/.my-healthcheck.cnf"
  chmod 0600 "$datadir/.my-healthcheck.cnf"
  mariadb-admin --socket="$socket" -uroot shutdown
  wait "$pid" || true
  log "initialised: database ${db:-(none)}, user ${user:-(none)}"
}

case "${1:-}" in -*) set -- mariadbd "$@" ;; esac
if [ "${1:-}" = mariadbd ] || [ "${1:-}" = mysqld ]; then
  mkdir -p "$datadir" /run/mysqld
  chown mysql:mysql "$datadir" /run/mysqld
  if [ ! -d "$datadir/mysql" ]; then init "${@:2}"; fi
  exec setpriv --reuid=mysql --regid=mysql --init-groups "$@"
fi
exec "$@"
