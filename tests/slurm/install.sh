#!/usr/bin/env bash
# Install Debian's SLURM and MUNGE when missing (the SLURM integration test needs them; CI machines are fresh).
# Exit 0: installed (or already present). Exit 3: cannot install here (no apt-get or not root): the test skips.
set -euo pipefail
need=()
for bin in slurmctld slurmd sbatch squeue munged; do
    command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "slurm and munge already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install slurm-wlm/munge: no apt-get on this machine (missing: ${need[*]})" >&2
    exit 3
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "cannot install slurm-wlm/munge: apt-get needs root (missing: ${need[*]})" >&2
    exit 3
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
