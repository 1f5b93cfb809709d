#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store tests: Debian's server binaries, a data directory under
# a temp dir, a unix socket there and a loopback port, a role with a password (SCRAM over TCP, the way
# a shared store is reached) and a database it owns. Nothing is written outside the temp dir.
#
#   eval "$(scripts/throwaway-postgres.sh start DIR)"   # prints `export LLMGATE_TEST_POSTGRES_URL=...`
#                                                      # (as root, DIR must be reachable by user postgres)
#   scripts/throwaway-postgres.sh stop DIR
#
# Durability is switched off (fsync, full-page writes): the cluster lives for one test session.
set -euo pipefail

cmd=${1:?usage: throwaway-postgres.sh start|stop DIR}
dir=${2:?usage: throwaway-postgres.sh start|stop DIR}

bindir=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then bindir=$d; break; fi
done
if [ -z "$bindir" ]; then
  echo "throwaway-postgres: no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)" >&2
  exit 3
fi

# initdb and the server refuse to run as root: as root, run them as the `postgres` system user the
# Debian package creates.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  t0=$(date +%s.%N)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    as_owner test -x "$dir" || { echo "throwaway-postgres: user postgres cannot reach $dir (use a DIR under /tmp)" >&2; exit 3; }
  fi
  chmod 700 "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --no-sync --no-instructions >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 3; }
  as_owner "$bindir/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
    >/dev/null || { cat "$dir/server.log" >&2; exit 3; }
  as_owner "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE llmgate LOGIN PASSWORD '$password'" -c "CREATE DATABASE llmgate OWNER llmgate" >&2
  t1=$(date +%s.%N)
  echo "throwaway-postgres: $($bindir/postgres --version) on 127.0.0.1:$port (socket in $dir), ready in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s" >&2
  echo "export LLMGATE_TEST_POSTGRES_URL=postgresql://llmgate:$password@127.0.0.1:$port/llmgate"
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_owner "$bindir/pg_ctl" stop -D "$dir/data" -m immediate -w >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: throwaway-postgres.sh start|stop DIR" >&2
  exit 2
  ;;
esac
