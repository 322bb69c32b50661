#!/usr/bin/env bash
# pdsd serve (no model): prints its URL on stderr, answers /health and /, and shuts down
# cleanly: SIGINT -> exit 130, SIGTERM -> exit 0. A port past 65535 is refused (it used to
# wrap: --port 70000 bound 4464).
set -u
pdsd=$1
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
for sig in INT TERM; do
  "$pdsd" serve --port 0 --root "$d/data" 2>"$d/err" &
  pid=$!
  url=""
  for _ in $(seq 200); do
    url=$(sed -nE 's#.*pdsd serve: (http://[^ ]+).*#\1#p' "$d/err")
    [ -n "$url" ] && break
    sleep 0.05
  done
  [ -n "$url" ] || { echo "no URL on stderr"; cat "$d/err"; kill -9 $pid; exit 1; }
  curl -sf "$url/health" | grep -q '"status":"ok"' || { echo "health failed"; kill -9 $pid; exit 1; }
  curl -sf "$url/" | grep -qi '<html' || { echo "page failed"; kill -9 $pid; exit 1; }
  case $url in http://127.0.0.1:*) ;; *) echo "not bound to 127.0.0.1: $url"; exit 1 ;; esac
  kill -s $sig $pid
  wait $pid
  rc=$?
  want=0
  [ $sig = INT ] && want=130
  [ $rc = $want ] || { echo "SIG$sig: exit $rc, want $want"; cat "$d/err"; exit 1; }
  echo "SIG$sig -> exit $rc ok"
done
for bad in "--port 70000" "--port -1" "--threads 0" "--header-timeout 0"; do
  # shellcheck disable=SC2086
  "$pdsd" serve $bad --root "$d/data" >"$d/out" 2>"$d/err"
  rc=$?
  [ $rc = 1 ] || { echo "serve $bad: exit $rc, want 1"; cat "$d/err"; exit 1; }
  opt=${bad%% *}
  grep -q -- "$opt" "$d/err" || { echo "serve $bad: the error does not name $opt"; cat "$d/err"; exit 1; }
  echo "serve $bad -> exit 1 ok"
done
