#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to try (and test) the sharded study's Slurm path:
#
#   scripts/slurm-local.sh up       install slurm-wlm + munge if missing (apt, as root), write the config,
#                                   start munged, slurmctld and slurmd, wait until the node is idle
#   scripts/slurm-local.sh status   does the controller answer, and what does the node say
#   scripts/slurm-local.sh env      the line to paste when /etc/slurm/slurm.conf belongs to another cluster
#   scripts/slurm-local.sh down     stop what `up` started and remove its files
#
# One partition (SLURM_LOCAL_PARTITION, default "local") with all of the machine's CPUs. Everything lives
# in SLURM_LOCAL_DIR (default /tmp/mslib-slurm). `up` links /etc/slurm/slurm.conf to its config only when
# that file is missing, so sbatch, squeue and submitit find the cluster without SLURM_CONF; an existing
# config of a real cluster is left alone (then export SLURM_CONF, see `env`). There is no slurmdbd: the job
# completion log (jobcomp/filetxt) is what `sacct -c` reads, so finished jobs stay visible.
# Both `up` and `down` are idempotent; each wait is bounded (SLURM_LOCAL_WAIT seconds, default 60).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/mslib-slurm}
PARTITION=${SLURM_LOCAL_PARTITION:-local}
WAIT=${SLURM_LOCAL_WAIT:-60}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
CONF=$DIR/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf
MUNGE_SOCKET=/run/munge/munge.socket.2
NODE=$(hostname -s)

say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# The controller answers `scontrol ping` within a few seconds or not at all; `timeout` keeps a dead one
# from stalling the caller.
ctld_up() { SLURM_CONF=$CONF timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { { SLURM_CONF=$CONF timeout 10 sinfo -h -N -n "$NODE" -o %t 2>/dev/null || true; } | head -n1; }
# idle, or running jobs: ready for more
node_ready() { case "$(node_state)" in idle|mix|alloc) return 0 ;; *) return 1 ;; esac; }

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  [ ${#missing[@]} = 0 ] && return 0
  is_root && command -v apt-get >/dev/null \
    || die "missing ${missing[*]}: install slurm-wlm and munge (as root: apt-get install slurm-wlm munge)"
  say "installing ${missing[*]} with apt-get"
  # another apt run (unattended-upgrades, the data package) may hold the lock for a while: wait for it
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    slurm-wlm munge >/dev/null
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
  mkdir -p "$DIR/state" "$DIR/spool"
  # root runs the daemons and the jobs: no slurm user or cgroup setup, which a laptop or container may lack
  cat > "$CONF.tmp" <<EOF
# written by scripts/slurm-local.sh: a one-node cluster for trying the sharded study's Slurm path
ClusterName=mslib-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# a cancelled job is killed 5 s after its SIGTERM, so a test's scancel takes effect quickly
KillWait=5
# finished jobs stay known to squeue/scontrol for 10 minutes
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  # a running munged (the system's, or ours from an earlier `up`) is reused
  if [ -S "$MUNGE_SOCKET" ] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  [ -f /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || die "no /etc/munge/munge.key and mungekey failed"; }
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- munged --force || die "munged did not start (see /var/log/munge/munged.log)"
  pgrep -u munge -n munged > "$DIR/munged.pid" || true
  local i
  for ((i = 0; i < WAIT * 5; i++)); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "munged did not answer within ${WAIT} s"
}

# the pid in a pid file is alive and still that daemon (after a reboot the number may be another process's)
alive() {
  local pid
  [ -f "$1" ] && pid=$(cat "$1") && [ -n "$pid" ] \
    && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(basename "$1" .pid)" ] \
    && ! grep -q '^State:.*zombie' "/proc/$pid/status" 2>/dev/null  # killed, not yet reaped: gone
}

link_etc_conf() {
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then return 0; fi
  if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
    say "$ETC_CONF belongs to another cluster: left alone; for this one run: export SLURM_CONF=$CONF"
  else
    mkdir -p "$(dirname "$ETC_CONF")" && ln -s "$CONF" "$ETC_CONF"
  fi
}

up() {
  install_packages
  if ctld_up && node_ready; then
    link_etc_conf
    say "already up: partition $PARTITION on node $NODE ($CONF)"
    return 0
  fi
  is_root || die "starting the daemons needs root (slurmd runs jobs as their users): run 'sudo $0 up'"
  mkdir -p "$DIR"
  write_conf
  start_munge
  alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF" || die "slurmctld did not start (see $DIR/slurmctld.log)"
  alive "$DIR/slurmd.pid" || slurmd -f "$CONF" || die "slurmd did not start (see $DIR/slurmd.log)"
  link_etc_conf
  local i state=
  for ((i = 0; i < WAIT; i++)); do
    state=$(node_state)
    case "$state" in
      idle|mix|alloc) say "up: partition $PARTITION on node $NODE, $(nproc) CPUs ($CONF)"; return 0 ;;
      down*|drain*|fail*)  # e.g. a node left down by an earlier run: bring it back once
        SLURM_CONF=$CONF scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  die "node $NODE not idle within ${WAIT} s (state '${state:-no answer}'; logs: $DIR/slurmctld.log, $DIR/slurmd.log)"
}

stop_pidfile() {
  local f=$1 pid i
  alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

down() {
  [ -d "$DIR" ] || { say "not up (no $DIR)"; return 0; }
  if [ -f "$CONF" ]; then
    SLURM_CONF=$CONF timeout 10 scancel --full -u "$(id -un)" 2>/dev/null || true
  fi
  stop_pidfile "$DIR/slurmd.pid"
  stop_pidfile "$DIR/slurmctld.pid"
  stop_pidfile "$DIR/munged.pid"  # only a munged that `up` started has this file
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then rm -f "$ETC_CONF"; fi
  rm -rf "$DIR"
  say "down"
}

status() {
  if ctld_up; then
    say "controller up ($CONF)"
    SLURM_CONF=$CONF sinfo
  else
    say "controller not answering ($CONF)"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
