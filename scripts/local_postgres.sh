#!/usr/bin/env bash
# Start a PostgreSQL for local development when none answers, create the `imagen` and
# `dagster` databases and apply the migrations. Prints the env vars to export.
#
#   scripts/local_postgres.sh            # start (or reuse) and migrate
#   scripts/local_postgres.sh stop       # stop the cluster this script started
#
# Uses, in order: a server already answering on $PGHOST:$PGPORT (default 127.0.0.1:5432);
# the Debian cluster (pg_ctlcluster); a private cluster in $IMAGEN_PGDATA (default
# ./.pgdata, trust auth, loopback only) made with initdb/pg_ctl.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGDATA_DIR="${IMAGEN_PGDATA:-$REPO_ROOT/.pgdata}"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
export PATH="${PGBIN:+$PGBIN:}$PATH"

if [ "${1:-}" = "stop" ]; then
  pg_ctl -D "$PGDATA_DIR" stop -m fast
  exit 0
fi

answering() { pg_isready -q -h "$PGHOST" -p "$PGPORT"; }

if ! answering; then
  if command -v pg_ctlcluster >/dev/null && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    echo "starting the Debian cluster $version/main" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  else
    command -v initdb >/dev/null || {
      echo "no PostgreSQL binaries found; install PostgreSQL (e.g. apt install postgresql)" >&2
      exit 1
    }
    if [ "$(id -u)" = 0 ]; then
      echo "initdb refuses to run as root; run this script as a normal user" >&2
      exit 1
    fi
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
      echo "creating a private cluster in $PGDATA_DIR" >&2
      initdb -D "$PGDATA_DIR" -U postgres --auth=trust >/dev/null
    fi
    pg_ctl -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w \
      -o "-h $PGHOST -p $PGPORT -k $PGDATA_DIR" start >&2
  fi
  for _ in $(seq 1 30); do answering && break; sleep 1; done
  answering || { echo "PostgreSQL did not start on $PGHOST:$PGPORT" >&2; exit 1; }
fi

SERVER="postgresql://postgres@$PGHOST:$PGPORT"
for db in imagen dagster; do
  exists="$(psql "$SERVER/postgres" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")"
  [ "$exists" = 1 ] || psql "$SERVER/postgres" -qc "CREATE DATABASE $db" >&2
done

IMAGEN="${IMAGEN_CLI:-$REPO_ROOT/.venv/bin/imagen}"
"$IMAGEN" db migrate --dsn "$SERVER/imagen" --bootstrap >&2

cat <<ENV
export IMAGEN_DATABASE_URL=$SERVER/imagen
export DAGSTER_PG_URL=$SERVER/dagster
ENV
