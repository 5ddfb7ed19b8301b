#!/usr/bin/env bash
# Starts a one-node SLURM on this machine, without systemd: munged (as user
# munge), slurmctld and slurmd, with a slurm.conf written for this node's real
# CPUs and memory. Waits until sinfo shows the node up. Idempotent: daemons
# already running are left alone (and restarted only if the config changed).
# Install first with tests/cluster/install.sh; stop with tests/cluster/stop.sh.
#
# SHOAL_CLUSTER_TIMEOUT (seconds, default 60) bounds the wait for the node.
set -euo pipefail
[ "$(id -u)" = 0 ] || exec sudo --preserve-env=SHOAL_CLUSTER_TIMEOUT "$0" "$@"

here=$(cd "$(dirname "$0")" && pwd)
conf=/etc/slurm/slurm.conf
mark="# Written by shoal's tests/cluster/start.sh"
timeout=${SHOAL_CLUSTER_TIMEOUT:-60}
logs=(/var/log/munge/munged.log /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log)

die() {
    echo "tests/cluster/start.sh: $*" >&2
    for log in "${logs[@]}"; do
        [ -s "$log" ] && { echo "--- last lines of $log:" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}

# Is the daemon of this pid file running? (By pid and name: no pgrep by pattern.)
alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

for cmd in munged slurmctld slurmd sinfo scontrol; do
    command -v "$cmd" >/dev/null || die "$cmd not found: run tests/cluster/install.sh first"
done
if [ -e "$conf" ] && ! head -n 1 "$conf" | grep -qF "$mark"; then
    die "$conf exists and was not written by this script; it is left alone (move it away to use this test cluster)"
fi

# This node as slurmd sees it: "NodeName=vm CPUs=2 ... RealMemory=24105".
node_line=$(slurmd -C | head -n 1)
node=${node_line%% *}
node=${node#NodeName=}
new=$(mktemp)
trap 'rm -f "$new"' EXIT
cat >"$new" <<CONF
$mark: a one-node cluster for tests.
ClusterName=shoal
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
# No cgroups and no systemd: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# Cores are consumable, memory is not: jobs without --mem still share the node.
SelectTypeParameters=CR_Core
# srun starts MPI programs through PMIx (PyPI's Open MPI 5 speaks it).
MpiDefault=pmix
SchedulerType=sched/backfill
# A job over a partition's limits is refused at submission with sbatch's message.
EnforcePartLimits=ALL
# A node that was down comes back by itself when its slurmd registers.
ReturnToService=2
# Finished jobs stay visible to scontrol for 5 minutes (no accounting database).
MinJobAge=300
KillWait=5
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=1-00:00:00 State=UP
CONF

# srun, shoal lab and the tests reach the node by its name.
if ! getent hosts "$node" >/dev/null; then
    echo "127.0.0.1 $node  # added by shoal's tests/cluster/start.sh" >>/etc/hosts
fi

changed=1
cmp -s "$new" "$conf" 2>/dev/null && changed=0
if [ $changed = 1 ]; then
    if alive /run/slurmctld.pid slurmctld || alive /run/slurmd.pid slurmd; then
        echo "tests/cluster/start.sh: slurm.conf changed; restarting SLURM"
        "$here/stop.sh" --keep-munge
    fi
    install -d -m 0755 /etc/slurm
    install -m 0644 "$new" "$conf"
fi

# munge: a key (the package usually makes one), its socket directory, the daemon.
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
fi
# (The package's init script may have started munged already: then it answers.)
if ! alive /run/munge/munged.pid munged && ! timeout 5 sh -c 'munge -n | unmunge' >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
fi
timeout 10 sh -c 'munge -n | unmunge >/dev/null' || die "munged does not answer"

install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/log/slurm
install -d /var/lib/slurm/slurmd
# -i: ignore saved state, so a machine that was not stopped cleanly starts clean.
alive /run/slurmctld.pid slurmctld || slurmctld -i || die "slurmctld did not start"
alive /run/slurmd.pid slurmd || slurmd || die "slurmd did not start"

deadline=$((SECONDS + timeout))
resumed=0
while :; do
    # e.g. "idle", "mixed", "down*" (a trailing * means not responding).
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    case $state in
        idle | mixed | allocated | completing) break ;;
        drained | draining | down)
            # Left down by an earlier run: ask for it back once.
            if [ $resumed = 0 ]; then
                scontrol update NodeName="$node" State=RESUME 2>/dev/null || true
                resumed=1
            fi
            ;;
    esac
    if [ $SECONDS -ge $deadline ]; then
        reason=$(sinfo -h -n "$node" -o %E 2>/dev/null || true)
        die "node $node not up after ${timeout} s (state: ${state:-no answer from slurmctld}${reason:+, reason: $reason})"
    fi
    sleep 0.2
done
echo "tests/cluster/start.sh: SLURM is up: node $node ($state), $(sinfo -h -n "$node" -o '%c CPUs, %m MB')"
