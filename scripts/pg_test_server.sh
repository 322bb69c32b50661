#!/usr/bin/env bash
# A throwaway PostgreSQL 16 + pgvector for the tests, from the PyPI `pgserver` wheel
# (scripts/requirements-oracle.txt; its initdb/pg_ctl/postgres run without Python).
#   pg_test_server.sh start STATE_DIR [PYTHON]   # PYTHON: the venv that has pgserver
#   pg_test_server.sh stop  STATE_DIR
# start writes STATE_DIR/dsn (postgresql://postgres@127.0.0.1:PORT/postgres) and
# STATE_DIR/password (the tests export it as PGPASSWORD; scram-sha-256 over TCP), or, when
# the wheel is missing, STATE_DIR/skip with the reason and exits 77 (CTest: skipped; the
# tests then skip with that reason). PostgreSQL refuses to run as root, so as root the
# server runs as `nobody` (setpriv, no account made) on a temp data and socket dir it owns.
# PGSERVER_BIN=DIR uses that bin/ (initdb, pg_ctl, postgres) instead of the wheel's.
set -euo pipefail
cmd=${1:?usage: pg_test_server.sh start|stop STATE_DIR [PYTHON]}
state=${2:?usage: pg_test_server.sh start|stop STATE_DIR [PYTHON]}
python=${3:-python3}

skip() { echo "SKIP: $*"; printf '%s\n' "$*" >"$state/skip"; exit 77; }

# As root: run as nobody:nogroup (PostgreSQL will not run as root); otherwise as ourselves.
as_server_user() {
  if [[ $(id -u) == 0 ]]; then setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; else "$@"; fi
}

stop_server() {
  [[ -f $state/tmpdir ]] || return 0
  local tmp bin
  tmp=$(cat "$state/tmpdir")
  bin=$(cat "$state/bin" 2>/dev/null || true)
  if [[ -n $bin && -f $tmp/data/postmaster.pid ]]; then
    (cd / && as_server_user "$bin/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1) || true
  fi
  rm -rf "$tmp"
  rm -f "$state/tmpdir" "$state/bin" "$state/dsn" "$state/password"
}

find_bin() {
  if [[ -n ${PGSERVER_BIN:-} ]]; then echo "$PGSERVER_BIN"; return; fi
  command -v "$python" >/dev/null 2>&1 || return 1
  # The wheel's folder without importing it (no side effects): pgserver/pginstall/bin.
  "$python" -c 'import importlib.util as u, os, sys
s = u.find_spec("pgserver")
sys.exit(1) if s is None else print(os.path.join(list(s.submodule_search_locations)[0], "pginstall", "bin"))' 2>/dev/null
}

start_server() {
  mkdir -p "$state"
  stop_server                       # a previous run killed before its cleanup
  rm -f "$state/skip"
  local bin
  bin=$(find_bin) || skip "the pgserver wheel is not installed for $python (pip install pgserver; scripts/requirements-oracle.txt)"
  [[ -x $bin/postgres && -x $bin/initdb && -x $bin/pg_ctl ]] || skip "no initdb/pg_ctl/postgres in $bin"
  if [[ $(id -u) == 0 ]] && ! command -v setpriv >/dev/null; then skip "running as root and setpriv (util-linux) is missing"; fi
  local tmp
  tmp=$(mktemp -d /tmp/pdsd-pg.XXXXXX)
  echo "$tmp" >"$state/tmpdir"
  [[ $(id -u) == 0 ]] && chown nobody:nogroup "$tmp"
  chmod 700 "$tmp"
  # A checkout under a private folder (/root is 0700) hides the wheel from nobody: run a copy
  # of its pginstall (~35 MB, relocatable) from the temp dir instead.
  if ! (cd / && as_server_user test -x "$bin/postgres"); then
    # The same layout: the binaries find their libraries at $ORIGIN/../../../pgserver.libs.
    local pkg=$tmp/wheel site
    site=$(dirname "$(dirname "$(dirname "$bin")")")
    mkdir -p "$pkg/pgserver" && cp -a "$(dirname "$bin")" "$pkg/pgserver/pginstall" \
      && { [[ ! -d $site/pgserver.libs ]] || cp -a "$site/pgserver.libs" "$pkg/"; } \
      && chmod -R a+rX "$pkg" && bin=$pkg/pgserver/pginstall/bin
    (cd / && as_server_user test -x "$bin/postgres") \
      || { echo "the server user cannot run $bin/postgres, even copied to $tmp"; exit 1; }
  fi
  echo "$bin" >"$state/bin"
  local password
  password="pdsd-test-$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"
  printf '%s\n' "$password" >"$tmp/pwfile"
  [[ $(id -u) == 0 ]] && chown nobody:nogroup "$tmp/pwfile"
  # Local socket: trust (the fixture's own setup below); TCP: scram-sha-256 with the password.
  (cd / && as_server_user "$bin/initdb" -D "$tmp/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$tmp/pwfile" -E UTF8 --locale=C --no-sync) >"$state/initdb.log" 2>&1 \
    || { cat "$state/initdb.log"; echo "initdb failed"; exit 1; }
  rm -f "$tmp/pwfile"

  local port tries
  for tries in 1 2 3 4 5; do
    port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue   # something listens there
    if (cd / && as_server_user "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 \
          -o "-p $port -k $tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50" start) >/dev/null 2>&1; then
      # pgvector in the public schema once, so tests with their own search_path see the type.
      "$bin/psql" -h "$tmp" -p "$port" -U postgres -d postgres -qAt -c "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null
      printf 'postgresql://postgres@127.0.0.1:%s/postgres\n' "$port" >"$state/dsn"
      printf '%s\n' "$password" >"$state/password"
      chmod 600 "$state/password"
      echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data $tmp/data)"
      return 0
    fi
  done
  cat "$tmp/server.log" 2>/dev/null || true
  echo "PostgreSQL did not start (5 ports tried)"
  exit 1
}

case $cmd in
  start) start_server ;;
  stop) stop_server; echo "stopped" ;;
  *) echo "usage: pg_test_server.sh start|stop STATE_DIR [PYTHON]"; exit 2 ;;
esac
