#!/usr/bin/env bash
# Stop a cluster that cluster-up.sh started: its jobs first (their processes belong to
# slurmstepd, which outlives slurmd), then every daemon by the pid it wrote under STATE_DIR.
# Usage: cluster-down.sh STATE_DIR [--remove]  (--remove also deletes STATE_DIR). Safe to rerun.
set -euo pipefail

state=${1:?usage: cluster-down.sh STATE_DIR [--remove]}
[[ -d $state/run ]] || { echo "cluster-down.sh: $state holds no cluster" >&2; exit 1; }

export PATH="$PATH:/usr/sbin:/sbin" SLURM_CONF=$state/etc/slurm.conf
if [[ -s $state/run/slurmctld.pid ]] && kill -0 "$(cat "$state/run/slurmctld.pid")" 2>/dev/null; then
    jobs=$(squeue --noheader --format=%i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086  # one job id per word
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 100); do
            [[ -z $(squeue --noheader --format=%i 2>/dev/null || true) ]] && break
            sleep 0.1
        done
    fi
fi

# Ask the daemons to end (SIGTERM), give them a few seconds, then SIGKILL what is left.
pids=()
for file in "$state"/run/slurmd-*.pid "$state"/run/slurmctld.pid "$state"/run/munged.pid; do
    [[ -s $file ]] && pids+=("$(cat "$file")")
done
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for _ in $(seq 1 50); do
    alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    ((${#alive[@]} == 0)) && break
    sleep 0.1
done
for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
rm -f "$state"/run/*.pid

if [[ ${2:-} == --remove ]]; then
    rm -rf "$state"
fi
echo "SLURM cluster in $state stopped"
