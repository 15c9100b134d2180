#!/usr/bin/env bash
# A one-node SLURM for CI (Debian 12: SLURM 22.05): slurmctld and slurmd on this machine, two fake GPUs,
# no accounting database. Idempotent: installs, configures and starts only what is missing. Needs root;
# no systemd (the daemons are started here and stopped by down.sh through their pid files).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "up.sh: needs root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(slurmctld slurmd slurm-client munge)
NODE=$(hostname -s)
CONF=/etc/slurm # the job-step plugin drops SLURM_CONF for its inner srun: only the default path works
LOGS=/var/log/slurm
if [ -e "$CONF/slurm.conf" ] && ! grep -q '^ClusterName=attnbench-ci$' "$CONF/slurm.conf"; then
  echo "up.sh: $CONF/slurm.conf belongs to another cluster; not touching it" >&2
  exit 1
fi

if ! dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
  began=$SECONDS
  # Keep the packages' maintainer scripts from starting the daemons (invoke-rc.d honours policy-rc.d).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null
  echo "up.sh: installed ${PACKAGES[*]} in $((SECONDS - began)) s"
fi
began=$SECONDS

# One fake GPU per dummy character device: a GRES without File= puts the node in INVAL.
for i in 0 1; do [ -e /dev/attnbench-fakegpu$i ] || mknod /dev/attnbench-fakegpu$i c 195 $i; done
mkdir -p "$CONF" "$LOGS" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
new=$(mktemp -d)
cat >"$new/gres.conf" <<GRES
Name=gpu File=/dev/attnbench-fakegpu0
Name=gpu File=/dev/attnbench-fakegpu1
GRES
cat >"$new/slurm.conf" <<CONFIG
ClusterName=attnbench-ci
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
SlurmUser=root
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
# No slurmdbd: sacct cannot answer, so Snakemake must read job states from squeue, which shows a
# finished job for MinJobAge seconds. The SLURM plugin falls back to sacct (and then waits forever)
# unless MinJobAge >= 3 x its first status-check delay (slurm-init-seconds-before-status-checks).
# An hour, not the default 5 min: tests/test_slurm.py reads each job's GPU request and allocation
# (scontrol show job) after the run. Without slurmdbd no log records gres/gpu (jobcomp/filetxt omits it).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
$(slurmd -C | head -1) NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN
PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONFIG
if ! cmp -s "$new/slurm.conf" "$CONF/slurm.conf" || ! cmp -s "$new/gres.conf" "$CONF/gres.conf"; then
  bash "$(dirname "$0")/down.sh" # daemons running with another configuration: restart them
  cp "$new/slurm.conf" "$new/gres.conf" "$CONF/"
fi
rm -r "$new"

if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
fi

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# -c: start from a clean state; a node once marked INVAL would otherwise stay so.
running /run/slurmctld.pid || slurmctld -c
running /run/slurmd.pid || slurmd

state() { timeout 5 sinfo -h -N -n "$NODE" -o %T 2>/dev/null; }
ready() { [[ $(state) =~ ^(idle|mixed|allocated)$ ]]; } # mixed, allocated: up, running earlier jobs
for _ in $(seq 60); do
  ready && break
  running /run/slurmctld.pid && running /run/slurmd.pid || break # a daemon died: say why at once
  sleep 1
done
if ! ready; then
  echo "up.sh: node $NODE is not up (state: '$(state)'); the daemons' logs say:" >&2
  tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2
  exit 1
fi
echo "up.sh: SLURM up in $((SECONDS - began)) s: $(sinfo -h -N -o '%N %T %c CPUs %G')"
