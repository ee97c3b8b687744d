#!/bin/sh
# What the official postgres image does with the settings compose passes: on first start (an empty data
# directory) a cluster whose superuser is POSTGRES_USER with POSTGRES_PASSWORD, and the database POSTGRES_DB;
# then the server, listening on every interface with password (scram-sha-256) authentication.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set: the database needs a password (docker/.env)}"
  user=${POSTGRES_USER:-postgres}
  database=${POSTGRES_DB:-$user}
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
  initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 >/dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  printf "listen_addresses = '*'\nunix_socket_directories = '/tmp'\n" >> "$PGDATA/postgresql.conf"
  if [ "$database" != postgres ]; then
    pg_ctl --silent --wait --options="-c listen_addresses=''" start
    createdb --username="$user" "$database"
    pg_ctl --silent --wait --mode=fast stop
  fi
  echo "database $database created for $user"
fi
if [ "$1" = postgres ]; then
  shift
  exec postgres "$@"
fi
exec "$@"
