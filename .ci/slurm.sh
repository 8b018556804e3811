#!/usr/bin/env bash
# A one-node Slurm cluster on loopback for the shard test: munged and slurmctld + slurmd
# from Debian's slurm-wlm, every file under one scratch folder, stopped by their PIDs.
#
#   . .ci/slurm.sh && slurm_start DIR      # exports SLURM_CONF; sbatch/squeue work after it
#   slurm_stop                            # (also on the caller's EXIT trap; removes DIR)
#
# No systemd and no /etc changes: munged gets its own key and socket, Slurm its own config,
# spool and state folders, ports from H2K_SLURM_PORT (6917, and the next one).

slurm_start() {
  local dir=$1
  local port=${H2K_SLURM_PORT:-6917}
  local node
  node=$(hostname -s)
  mkdir -p "$dir"/{munge,spool,state,log}
  chmod 700 "$dir/munge"
  mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null 2>&1 ||
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munge.seed" --force
  local cpus mem
  cpus=$(nproc)
  # The node's memory in MiB, less a margin, so that tasks asking for --mem fit.
  mem=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  cat >"$dir/slurm.conf" <<CONF
ClusterName=hyper2kvm-ci
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=ci Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  export SLURM_CONF="$dir/slurm.conf"
  _slurm_dir=$dir
  slurmctld -f "$SLURM_CONF" -i
  slurmd -f "$SLURM_CONF" -N "$node"
  # Up when the node is idle.
  for _ in $(seq 1 100); do
    sinfo -h -o '%T' 2>/dev/null | grep -q '^idle' && return 0
    sleep 0.2
  done
  echo "slurm did not come up; logs in $dir/log" >&2
  tail -n 20 "$dir"/log/*.log >&2
  return 1
}

slurm_stop() {
  local dir=${_slurm_dir:-}
  [[ -n $dir ]] || return 0
  local f pids=()
  for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [[ -f $f ]] && pids+=("$(cat "$f")")
  done
  local p alive _
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Keys, spool and logs are this run's alone: nothing of them is left in the temp folder,
  # once the daemons (which write their state as they stop) are gone; never a failure.
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  rm -rf "$dir" 2>/dev/null || true
  _slurm_dir=
}
