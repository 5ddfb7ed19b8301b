#!/usr/bin/env bash
# Stops what tests/cluster/start.sh started: cancels every job, then stops
# slurmd, slurmctld and munged, each by the pid in its pid file.
# --keep-munge leaves munged running.
set -euo pipefail
[ "$(id -u)" = 0 ] || exec sudo "$0" "$@"

stop() { # pidfile name
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 0
    kill "$pid"
    for _ in $(seq 100); do # up to 10 s, then SIGKILL
        [ -d "/proc/$pid" ] || { echo "tests/cluster/stop.sh: stopped $2"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    echo "tests/cluster/stop.sh: killed $2 (it ignored SIGTERM for 10 s)"
}

# Jobs first, so none of their processes outlives slurmd.
if scontrol ping >/dev/null 2>&1; then
    jobs=$(timeout 30 squeue --noheader --format %i || true)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        timeout 30 scancel $jobs || true
        for _ in $(seq 100); do
            [ -z "$(timeout 30 squeue --noheader --format %i || true)" ] && break
            sleep 0.1
        done
    fi
fi
stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
[ "${1:-}" = --keep-munge ] || stop /run/munge/munged.pid munged
