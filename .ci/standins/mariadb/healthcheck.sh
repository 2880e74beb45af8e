#!/bin/bash
# TEST SCAFFOLDING: healthcheck.sh of the MariaDB stand-in, with the two tests
# docker-compose.yml uses, as the official image's script does them:
#   --connect              the server accepts TCP connections
#   --innodb_initialized   InnoDB is ready
set -u
defaults=/var/lib/mysql/.my-healthcheck.cnf
if [ "$#" -eq 0 ]; then
  echo "usage: healthcheck.sh [--connect] [--innodb_initialized]" >&2
  exit 1
fi
if [ ! -r "$defaults" ]; then
  echo "healthcheck: $defaults is missing: the server is still being initialised" >&2
  exit 1
fi
for test in "$@"; do
  case "$test" in
    --connect)
      if out=$(mariadb --defaults-extra-file="$defaults" -h localhost --protocol tcp -e 'SELECT 1' 2>&1); then
        :
      elif [[ "$out" == *"Can't connect"* ]]; then
        echo "healthcheck --connect: $out" >&2
        exit 1
      fi
      ;;
    --innodb_initialized)
      ready=$(mariadb --defaults-extra-file="$defaults" --skip-column-names -e \
        "SELECT 1 FROM information_schema.ENGINES WHERE engine='innodb' AND support IN ('YES','DEFAULT','ENABLED')" 2>&1)
      if [ "$ready" != 1 ]; then
        echo "healthcheck --innodb_initialized: ${ready:-InnoDB not ready}" >&2
        exit 1
      fi
      ;;
    *)
      echo "healthcheck.sh (stand-in): $test is not implemented here" >&2
      exit 1
      ;;
  esac
done
