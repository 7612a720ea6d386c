#!/usr/bin/env bash
# Start a single-node SLURM cluster on 127.0.0.1 for tests: munged (unless one already answers), slurmctld,
# slurmd, with fake GPU device files so `--gpus=1` jobs schedule.
#   usage: start.sh LAB [CPUS] [GPUS]     LAB = an empty scratch folder (configs, state, logs, pid files)
# Writes the PID of every daemon it started to LAB/run/started.pids ("name pid" lines; stop.sh reads it) and
# links /etc/slurm/{slurm,gres}.conf to LAB/etc (needed: the Snakemake jobstep plugin strips SLURM_CONF).
# Exit 3: this machine cannot host the test cluster (reason on stderr; the test skips). Needs root.
set -euo pipefail
LAB=$(realpath "${1:?usage: start.sh LAB [CPUS] [GPUS]}")
CPUS=${2:-$(nproc)}
GPUS=${3:-2}
HERE=$(dirname "$(realpath "$0")")
HOST=$(hostname -s)
cannot() { echo "start.sh: cannot start the test cluster: $*" >&2; exit 3; }

[ "$(id -u)" -eq 0 ] || cannot "needs root (slurmd runs jobs as root here)"
getent hosts "$HOST" >/dev/null || cannot "hostname $HOST does not resolve (add it to /etc/hosts)"
if (exec 3<>/dev/tcp/127.0.0.1/6817) 2>/dev/null; then
    cannot "port 6817 is in use: a slurmctld is already running on this machine"
fi
stale() {  # is $1 a link left by an earlier, killed test run (its lab removed, or none of its daemons alive)?
    local link=$1 lab name pid
    [ -L "$link" ] || return 1
    [ -e "$link" ] || return 0
    lab=$(dirname "$(dirname "$(readlink "$link")")")
    [ -f "$lab/run/started.pids" ] || return 1  # not a lab of this script: leave it alone
    while read -r name pid; do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && return 1
    done < "$lab/run/started.pids"
    return 0
}
mkdir -p /etc/slurm
for f in slurm.conf gres.conf; do
    link=/etc/slurm/$f
    if stale "$link"; then rm -f "$link"; fi
    [ -e "$link" ] && cannot "$link exists (a real SLURM configuration?); refusing to replace it"
done

mkdir -p "$LAB"/{etc,state/ctld,state/d,log,run,dev}
: > "$LAB/run/started.pids"
LASTGPU=$((GPUS - 1))
for f in slurm.conf gres.conf; do
    sed -e "s|@LAB@|$LAB|g" -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@GPUS@|$GPUS|g" \
        -e "s|@LASTGPU@|$LASTGPU|g" "$HERE/$f.in" > "$LAB/etc/$f"
    ln -s "$LAB/etc/$f" "/etc/slurm/$f"
done
for i in $(seq 0 "$LASTGPU"); do
    mknod "$LAB/dev/fakegpu$i" c 1 3 || cannot "mknod failed (no CAP_MKNOD?): fake GPUs need device files"
done

# MUNGE: reuse a running daemon; otherwise start one as user munge (it forks and writes its pid file).
if ! (munge -n | unmunge) >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    echo "munged $(cat /run/munge/munged.pid)" >> "$LAB/run/started.pids"
    (munge -n | unmunge) >/dev/null 2>&1 || { echo "start.sh: munged does not answer" >&2; exit 1; }
fi

# -D: stay in the foreground, so $! is the daemon's own PID; output goes to files so callers do not wait on it.
/usr/sbin/slurmctld -D > "$LAB/log/slurmctld.out" 2>&1 < /dev/null &
echo "slurmctld $!" >> "$LAB/run/started.pids"
/usr/sbin/slurmd -D > "$LAB/log/slurmd.out" 2>&1 < /dev/null &
echo "slurmd $!" >> "$LAB/run/started.pids"

for _ in $(seq 150); do
    state=$(sinfo --noheader --nodes="$HOST" --format=%T 2>/dev/null || true)
    case "$state" in
        idle) echo "cluster up: node $HOST idle, $CPUS CPUs, $GPUS fake GPUs, lab $LAB"; exit 0 ;;
        drain*|inval*|down*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
done
echo "start.sh: node $HOST not idle after 30 s (state '${state:-?}'); see $LAB/log/" >&2
tail -n 20 "$LAB/log/slurmctld.log" "$LAB/log/slurmd.log" >&2 || true
exit 1
