#!/usr/bin/env bash
# Bring up a throwaway SLURM cluster on this one machine, for trying trainyard's slurm pools
# and for its integration tests: munged, slurmctld and one `slurmd -N` per simulated node,
# each node with fake GPUs (GRES over character devices made with mknod).
#
# Usage: cluster-up.sh [STATE_DIR]      (as root; needs Debian's slurm-wlm and munge)
#   STATE_DIR  folder for config, state, logs and pid files; default: a fresh temporary one.
#   TRAINYARD_SLURM_NODES (default 3), _CPUS (per node, default 2), _GPUS (per node, default 2)
# Prints the SLURM_CONF line to export; `cluster-down.sh STATE_DIR` stops it all.
#
# Nothing is installed as a service: the daemons are started detached, state lives only in
# STATE_DIR, and cluster-down.sh stops them by the pids they wrote there. The only change
# outside STATE_DIR is one /etc/hosts line per node name (127.0.0.1), so that the node names
# SLURM hands to jobs resolve, as MASTER_ADDR must for torch.distributed.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

state=${1:-$(mktemp -d /tmp/trainyard-slurm.XXXXXX)}
num_nodes=${TRAINYARD_SLURM_NODES:-3}
cpus=${TRAINYARD_SLURM_CPUS:-2}
gpus=${TRAINYARD_SLURM_GPUS:-2}
memory_mb=$((cpus * 1000))

die() { echo "cluster-up.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root: slurmd starts jobs as their owner and needs root for it"
for cmd in munged mungekey slurmctld slurmd sinfo scontrol python3; do
    command -v "$cmd" >/dev/null || die "'$cmd' is not on PATH; install Debian's packages: \
apt-get install -y slurm-wlm munge (make slurm-deps does this)"
done
[[ -e $state/run/slurmctld.pid ]] && die "$state already holds a cluster; stop it with cluster-down.sh $state"

mkdir -p "$state"/{etc,log,run,spool,dev,munge}
state=$(cd "$state" && pwd)
chmod 700 "$state/munge"
nodes=()
for i in $(seq 1 "$num_nodes"); do nodes+=("tynode$i"); done

# Ports: one for slurmctld, one per slurmd, all free right now.
read -r -a ports < <(python3 - "$((num_nodes + 1))" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

for node in "${nodes[@]}"; do
    grep -qE "^127\.0\.0\.1[[:space:]].*\b$node\b" /etc/hosts || echo "127.0.0.1 $node" >>/etc/hosts
done

# Fake GPUs: SLURM only needs device files to hand out; jobs see CUDA_VISIBLE_DEVICES.
for g in $(seq 0 $((gpus - 1))); do
    [[ -e $state/dev/nvidia$g ]] || mknod "$state/dev/nvidia$g" c 195 "$g"
done

mungekey --create --keyfile="$state/munge/munge.key" --force 2>/dev/null
chmod 400 "$state/munge/munge.key"

host=$(hostname -s)
conf=$state/etc/slurm.conf
cat >"$conf" <<EOF
# Written by trainyard's deploy/slurm/cluster-up.sh; see that script.
ClusterName=trainyard-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/%n
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd-%n.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
# Several slurmd on one machine: no cgroups, no binding, node sizes taken from this file.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, one job would take a whole node's memory and block the others.
DefMemPerCPU=$((memory_mb / cpus / 2))
GresTypes=gpu
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=1
KillWait=5
InactiveLimit=0
MinJobAge=300
SlurmdTimeout=300
EOF
for i in "${!nodes[@]}"; do
    echo "NodeName=${nodes[$i]} NodeAddr=127.0.0.1 Port=${ports[$((i + 1))]} CPUs=$cpus" \
        "RealMemory=$memory_mb Gres=gpu:$gpus State=UNKNOWN" >>"$conf"
done
node_list=$(IFS=,; echo "${nodes[*]}")
cat >>"$conf" <<EOF
PartitionName=cpu Nodes=$node_list Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$node_list MaxTime=INFINITE State=UP
EOF
echo "NodeName=$node_list Name=gpu File=$state/dev/nvidia[0-$((gpus - 1))]" >"$state/etc/gres.conf"
echo "export SLURM_CONF=$conf" >"$state/env"
export SLURM_CONF=$conf

setsid munged --force --socket="$state/munge/munge.socket" --key-file="$state/munge/munge.key" \
    --pid-file="$state/run/munged.pid" --log-file="$state/log/munged.log" \
    --seed-file="$state/munge/munged.seed" </dev/null
setsid slurmctld -i </dev/null >>"$state/log/slurmctld.out" 2>&1
for node in "${nodes[@]}"; do
    setsid slurmd -N "$node" </dev/null >>"$state/log/slurmd-$node.out" 2>&1
done

# Ready when every node is idle (slurmd registered with slurmctld).
for _ in $(seq 1 300); do
    idle=$(sinfo --noheader --partition=cpu --states=idle --format=%D 2>/dev/null || true)
    [[ ${idle:-0} == "$num_nodes" ]] && break
    sleep 0.1
done
if [[ ${idle:-0} != "$num_nodes" ]]; then
    echo "cluster-up.sh: only ${idle:-0} of $num_nodes nodes came up within 30 s; logs in $state/log" >&2
    tail -n 5 "$state"/log/*.log >&2 || true
    exit 1
fi
echo "SLURM cluster up: ${num_nodes} nodes (${cpus} CPUs, ${gpus} fake GPUs each), partitions cpu and gpu"
echo "export SLURM_CONF=$conf"
