#!/usr/bin/env bash
# Stop the test cluster started by start.sh LAB: cancel its jobs, TERM each daemon it started (by the PIDs in
# LAB/run/started.pids, in reverse start order, KILL after 10 s), and remove the /etc/slurm links into LAB.
#   usage: stop.sh LAB
set -uo pipefail
LAB=$(realpath "${1:?usage: stop.sh LAB}")
pids="$LAB/run/started.pids"
if [ -s "$pids" ] && grep -q '^slurmctld ' "$pids"; then
    # Cancel whatever the test left queued or running so no slurmstepd outlives slurmd.
    ids=$(squeue --noheader --format=%i 2>/dev/null || true)
    if [ -n "$ids" ]; then
        scancel $ids 2>/dev/null || true
        for _ in $(seq 50); do [ -z "$(squeue --noheader --format=%i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
fi
if [ -s "$pids" ]; then
    tac "$pids" | while read -r name pid; do
        # Only signal the PID if it is still the daemon we started (not a reused PID).
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || continue
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
        if [ -e "/proc/$pid" ]; then
            echo "stop.sh: $name ($pid) ignored TERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
fi
for f in slurm.conf gres.conf; do
    link=/etc/slurm/$f
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$LAB/etc/$f" ]; then rm -f "$link"; fi
done
exit 0
