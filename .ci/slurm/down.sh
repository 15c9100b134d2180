#!/usr/bin/env bash
# Stops what up.sh started, through the pid files; does nothing for a daemon that is not running.
set -uo pipefail
for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
  daemon=$(basename "$pidfile" .pid)
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  # Only the daemon itself: a stale pid file may name a process that got its number since.
  if [ "$(ps -o comm= -p "$pid")" = "$daemon" ]; then
    kill "$pid"
    # A slurmd still retrying to register with a dead controller ignores SIGTERM: SIGKILL after 10 s.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    how=stopped
    kill -9 "$pid" 2>/dev/null && how=killed
    echo "down.sh: $how $daemon ($pid)"
  fi
  rm -f "$pidfile"
done
