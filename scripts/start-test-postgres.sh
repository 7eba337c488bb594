#!/usr/bin/env bash
# A throwaway local PostgreSQL server for the feedback store tests, idempotently.
#
#   scripts/start-test-postgres.sh [start]   start it (or reuse the running one); print the URL
#   scripts/start-test-postgres.sh stop      stop it (the data folder stays for the next start)
#   scripts/start-test-postgres.sh status    exit 0 if it is running and accepting connections
#
# `start` prints one line on stdout, for eval:
#   export ALIGND_TEST_POSTGRES_URL='postgres://alignd_test:alignd_test@127.0.0.1:54329/alignd_test?sslmode=disable'
# so `eval "$(scripts/start-test-postgres.sh)"` sets it; everything else goes to stderr.
#
# The server listens on 127.0.0.1 only, on port $ALIGND_TEST_POSTGRES_PORT (default 54329, not
# the default 5432, so it never meets a real cluster), with its data, socket and log under
# ${ALIGND_CACHE_DIR:-/tmp}/pg-test. Debian's PostgreSQL is installed if missing. initdb and
# the server refuse to run as root, so as root they run as the `postgres` system user.
# The test role alignd_test (password alignd_test, scram-sha-256 over TCP) owns the database
# alignd_test; tests create and drop their own schemas in it.
set -euo pipefail

ACTION="${1:-start}"
PORT="${ALIGND_TEST_POSTGRES_PORT:-54329}"
BASE="${ALIGND_CACHE_DIR:-/tmp}/pg-test"
DATA="$BASE/data"
RUN="$BASE/run"
LOG="$BASE/server.log"
ROLE=alignd_test
PASSWORD=alignd_test
DATABASE=alignd_test
URL="postgres://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DATABASE?sslmode=disable"

say() { echo "start-test-postgres: $*" >&2; }
die() { say "error: $*"; exit 1; }

find_bin() {
  local dir
  for dir in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then echo "$dir"; return 0; fi
  done
  return 1
}

if ! BIN="$(find_bin)"; then
  if [[ "$ACTION" != "start" ]]; then die "PostgreSQL is not installed"; fi
  say "installing Debian's postgresql"
  SUDO=""
  if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >&2
  BIN="$(find_bin)" || die "postgresql was installed but no initdb/pg_ctl was found under /usr/lib/postgresql"
fi

# Who runs the server: root may not, so root hands it to `postgres`.
if [[ "$(id -u)" == "0" ]]; then
  RUN_USER=postgres
  id -u "$RUN_USER" >/dev/null 2>&1 || die "the postgres system user is missing (reinstall postgresql)"
  as_server() { runuser -u "$RUN_USER" -- "$@"; }
else
  RUN_USER="$(id -un)"
  as_server() { "$@"; }
fi

pg() { as_server "$BIN/pg_ctl" -D "$DATA" "$@"; }

# The server process named in postmaster.pid, if that process is really a postgres server of
# this data folder. After a reboot the pid file is stale and its pid may belong to anything.
live_postmaster() {
  [[ -f "$DATA/postmaster.pid" ]] || return 1
  local pid
  pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$DATA" || return 1
  return 0
}

ready() {
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2 >/dev/null 2>&1
}

stop_server() {
  if live_postmaster; then
    say "stopping the server in $DATA"
    pg stop -m fast -w -t 60 >&2
  else
    say "not running"
  fi
}

case "$ACTION" in
  stop) stop_server; exit 0 ;;
  status)
    if live_postmaster && ready; then say "running on 127.0.0.1:$PORT"; exit 0; fi
    say "not running"; exit 1 ;;
  start) ;;
  *) die "unknown action $ACTION (start, stop, status)" ;;
esac

mkdir -p "$BASE"
if [[ "$(id -u)" == "0" ]]; then chown "$RUN_USER:" "$BASE"; fi
chmod 700 "$BASE"
as_server test -w "$BASE" || die "$RUN_USER cannot write $BASE (a parent folder is closed to it?): set ALIGND_CACHE_DIR to a folder it can reach"

if [[ ! -f "$DATA/PG_VERSION" ]]; then
  say "creating a cluster in $DATA"
  rm -rf "$DATA"
  PWFILE="$BASE/pwfile"
  # The bootstrap superuser gets a random password; it only ever connects over the local socket
  # (trust), so nobody needs to know it.
  as_server bash -c "umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >'$PWFILE'"
  as_server "$BIN/initdb" -D "$DATA" -U postgres --pwfile="$PWFILE" -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$BASE/initdb.log" 2>&1 \
    || { cat "$BASE/initdb.log" >&2; die "initdb failed"; }
  rm -f "$PWFILE"
fi

if live_postmaster && ready; then
  say "reusing the server on 127.0.0.1:$PORT"
else
  if live_postmaster; then
    # Running but not answering on our port (started with another port, or hung): restart.
    say "the server in $DATA does not answer on port $PORT: restarting it"
    pg stop -m immediate -w -t 30 >&2 || true
  fi
  # A pid file left by a server that no longer runs (machine rebooted, server killed): the
  # server would refuse to start if its pid now belongs to another process.
  rm -f "$DATA/postmaster.pid"
  as_server mkdir -p "$RUN"
  rm -f "$RUN"/.s.PGSQL."$PORT" "$RUN"/.s.PGSQL."$PORT".lock
  say "starting PostgreSQL ($BIN) on 127.0.0.1:$PORT"
  # Many tests run at once, each with its own pool: allow plenty of connections. fsync stays on:
  # the durability tests rely on it.
  if ! pg start -w -t 60 -l "$LOG" \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$RUN -c max_connections=300" >&2; then
    tail -n 30 "$LOG" >&2 || true
    die "the server did not start (log: $LOG)"
  fi
  for _ in $(seq 1 30); do ready && break; sleep 1; done
  ready || { tail -n 30 "$LOG" >&2 || true; die "the server started but does not accept connections"; }
fi

psql_admin() {
  as_server "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres -d postgres "$@"
}
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]]; then
  say "creating role $ROLE"
  psql_admin -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'"
fi
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != "1" ]]; then
  say "creating database $DATABASE"
  psql_admin -c "CREATE DATABASE $DATABASE OWNER $ROLE"
fi

echo "export ALIGND_TEST_POSTGRES_URL='$URL'"
