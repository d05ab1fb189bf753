#!/usr/bin/env bash
# start-local-cluster.sh — a real Slurm 22.05 cluster on this one host, for tests and CI (Debian, root, no systemd).
#
#   start-local-cluster.sh [start]  install what is missing (apt), write the configs, start munged, MariaDB,
#                                   slurmdbd, slurmctld and one slurmd per simulated node; return once every
#                                   node is idle. Idempotent: running daemons are left alone (~2 s when up).
#   start-local-cluster.sh stop     stop the daemons this script starts (by PID file).
#   start-local-cluster.sh status   daemons, sinfo, GPUs per node.
#
# Environment knobs (all optional):
#   SLURM_SIM_NODES=2        N simulated nodes n1..nN (one slurmd each, `slurmd -N nK`, port 6830+K), the
#                            host's CPUs split between them; n1..nN are added to /etc/hosts as 127.0.0.1
#                            (Lightning uses the first node name as MASTER_ADDR, so it must resolve).
#                            1: one node named after `hostname -s` with all CPUs.
#   SLURM_SIM_GPUS=1         fake GPUs per node (0: none). Each is a dummy char device /dev/cifar-hpc-fakegpuK
#                            (major/minor of /dev/null), declared as gres gpu, so `#SBATCH --gpus-per-node=1`
#                            scripts written for GPU clusters schedule here unchanged and get
#                            CUDA_VISIBLE_DEVICES; there is no CUDA behind it, so the code falls back to CPU.
#   SLURM_MAX_ARRAY_SIZE=1001  MaxArraySize (bounds the array *index*: large grids must be split).
#   SLURM_ACCOUNTING=1       1: slurmdbd + MariaDB so that `sacct` works (submitit polls with sacct; without it a
#                            job killed outside Python leaves submitit waiting forever). 0: no accounting.
#   SLURM_CLUSTER=local      ClusterName.
#   SLURM_RESET=0            1: wipe slurmctld's state (job ids restart at 1) before starting.
#
# Partitions: `debug` (default, PriorityTier=1) and `high` (PriorityTier=10) which preempts `debug`:
# preempted jobs get their --signal (this project: USR2) and are requeued.
# Everything runs as root; jobs run as the submitting user (SlurmUser=root).
set -euo pipefail

ACTION=${1:-start}
NODES=${SLURM_SIM_NODES:-2}
GPUS=${SLURM_SIM_GPUS:-1}
MAX_ARRAY=${SLURM_MAX_ARRAY_SIZE:-1001}
ACCT=${SLURM_ACCOUNTING:-1}
CLUSTER=${SLURM_CLUSTER:-local}
HOST=$(hostname -s)
NCPU=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)

CONF_DIR=/etc/slurm
SPOOL=/var/spool/slurm
LOG=/var/log/slurm
RUN=/run/slurm
FAKEGPU=/dev/cifar-hpc-fakegpu
DB_PASS=slurmpass   # local MariaDB user on 127.0.0.1 only; not a secret worth keeping

log() { printf '[start-local-cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# alive PIDFILE [COMM]: true when the pid file names a live process (whose comm contains COMM)
alive() {
  local f=$1 want=${2:-} pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -z "$want" ] || grep -q "$want" "/proc/$pid/comm" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.25
  done
}

# daemon CMD...: start a daemon without the start lock's fd 9 (else it holds the lock for ever)
daemon() { "$@" 9>&-; }

node_names() {
  if [ "$NODES" -le 1 ]; then echo "$HOST"; else for i in $(seq 1 "$NODES"); do echo "n$i"; done; fi
}

install_pkgs() {
  local pkgs="munge slurmctld slurmd slurm-client" missing="" p
  [ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server mariadb-client"
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    log "apt-get install:$missing"
    apt-get update -qq
    # policy-rc.d 101: the packages' init scripts must not start daemons; this script starts them itself
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null \
      || { rm -f /usr/sbin/policy-rc.d; return 1; }
    rm -f /usr/sbin/policy-rc.d
  fi
}

# One dummy char device per fake GPU, /dev/null's major/minor (1,3): slurmd only stats it.
make_fake_gpus() {
  local k
  for k in $(seq 0 $(( NODES * GPUS - 1 ))); do
    [ -c "$FAKEGPU$k" ] || { mknod -m 666 "$FAKEGPU$k" c 1 3; }
  done
}

# install_if_changed NEW DEST: replace DEST with NEW when they differ; sets CONF_CHANGED=1 then
install_if_changed() {
  if cmp -s "$1" "$2"; then rm -f "$1"; else mv "$1" "$2"; CONF_CHANGED=1; fi
}

write_configs() {
  mkdir -p "$CONF_DIR" "$SPOOL/ctld" "$LOG" "$RUN"
  CONF_CHANGED=0
  local cpus_per_node=$NCPU node_lines="" gres_lines="" gres="" i port n first last
  if [ "$NODES" -gt 1 ]; then
    cpus_per_node=$(( NCPU / NODES )); [ "$cpus_per_node" -ge 1 ] || cpus_per_node=1
  fi
  local mem_per_node=$(( MEM_MB * 85 / 100 / NODES ))
  [ "$GPUS" -gt 0 ] && gres=" Gres=gpu:$GPUS"
  i=0
  for n in $(node_names); do
    i=$((i + 1)); mkdir -p "$SPOOL/d-$n"
    if [ "$NODES" -le 1 ]; then
      node_lines="NodeName=$n NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$mem_per_node$gres State=UNKNOWN"
    else
      port=$((6830 + i))
      node_lines+="NodeName=$n NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$port CPUs=$cpus_per_node RealMemory=$mem_per_node$gres State=UNKNOWN"$'\n'
      # simulated node names must resolve (Lightning/torch use the first node name as MASTER_ADDR)
      awk -v n="$n" '$1 == "127.0.0.1" { for (i = 2; i <= NF; i++) if ($i == n) found = 1 } END { exit !found }' /etc/hosts \
        || echo "127.0.0.1 $n" >> /etc/hosts
    fi
    if [ "$GPUS" -gt 0 ]; then
      first=$(( (i - 1) * GPUS )); last=$(( first + GPUS - 1 ))
      if [ "$GPUS" = 1 ]; then gres_lines+="NodeName=$n Name=gpu File=$FAKEGPU$first"$'\n'
      else gres_lines+="NodeName=$n Name=gpu File=$FAKEGPU[$first-$last]"$'\n'; fi
    fi
  done
  local acct_lines
  if [ "$ACCT" = 1 ]; then
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
  else
    acct_lines="AccountingStorageType=accounting_storage/none"
  fi
  local def_mem=$(( mem_per_node / cpus_per_node / 2 ))
  cat > "$CONF_DIR/slurm.conf.new" <<EOF
# written by cifar-hpc slurm/start-local-cluster.sh — edits are overwritten
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also = how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
$acct_lines
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# snappy scheduling for tests (defaults: 60 s main loop, 30 s backfill)
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that gives no --mem gets the whole node's memory and jobs run one at a time
DefMemPerCPU=$def_mem
MaxArraySize=$MAX_ARRAY
GresTypes=gpu
MpiDefault=none
MailProg=/bin/true
# partition "high" preempts "debug"; preempted jobs get their --signal (this project: USR2) then are requeued
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$node_lines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10
EOF
  install_if_changed "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"
  # fake GPUs: no NVML behind them, so no autodetection; slurmd checks that each File exists
  printf '# written by cifar-hpc slurm/start-local-cluster.sh\nAutoDetect=off\n%s' "$gres_lines" > "$CONF_DIR/gres.conf.new"
  install_if_changed "$CONF_DIR/gres.conf.new" "$CONF_DIR/gres.conf"
  if [ "$ACCT" = 1 ]; then
    cat > "$CONF_DIR/slurmdbd.conf.new" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf.new"   # slurmdbd refuses a world-readable config
    local changed=$CONF_CHANGED; CONF_CHANGED=0
    install_if_changed "$CONF_DIR/slurmdbd.conf.new" "$CONF_DIR/slurmdbd.conf"
    DBD_CONF_CHANGED=$CONF_CHANGED; CONF_CHANGED=$changed
  fi
}

start_munge() {
  if alive /run/munge/munged.pid munged; then return; fi
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key; }
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  log "starting munged"
  daemon runuser -u munge -- /usr/sbin/munged --force
  wait_for 10 munge bash -c 'munge -n | unmunge'
}

start_mariadb() {
  if mysqladmin ping >/dev/null 2>&1; then return; fi
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  log "starting mariadbd"
  daemon setsid -f /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
      >>/var/log/mariadbd.out 2>&1 < /dev/null
  wait_for 60 mariadb mysqladmin ping
}

create_db_user() {  # cheap, and covers a MariaDB that something else started
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  [ "${DBD_CONF_CHANGED:-0}" = 1 ] && stop_pidfiles $RUN/slurmdbd.pid
  if ! alive $RUN/slurmdbd.pid slurmdbd; then
    log "starting slurmdbd"
    daemon /usr/sbin/slurmdbd
  fi
  wait_for 60 slurmdbd sacctmgr -n -P show cluster
  sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

nodes_ready() {  # every node idle/mixed/allocated/completing (not down, drained, unknown or not responding)
  local states
  states=$(sinfo -h -N -p debug -o '%T' 2>/dev/null | sort -u) || return 1
  [ -n "$states" ] && ! grep -qvE '^(idle|mixed|allocated|completing)$' <<<"$states"
}

start_slurm() {
  if [ "${SLURM_RESET:-0}" = 1 ]; then
    stop_slurm; rm -rf "${SPOOL:?}/ctld"/*
  elif [ "${CONF_CHANGED:-0}" = 1 ]; then
    log "configuration changed: restarting slurmctld and slurmd"
    stop_slurm
  fi
  if ! alive $RUN/slurmctld.pid slurmctld; then log "starting slurmctld"; daemon /usr/sbin/slurmctld; fi
  wait_for 30 slurmctld scontrol ping
  local n
  for n in $(node_names); do
    if alive "$RUN/slurmd-$n.pid" slurmd; then continue; fi
    log "starting slurmd for $n"
    if [ "$NODES" -le 1 ]; then daemon /usr/sbin/slurmd; else daemon /usr/sbin/slurmd -N "$n"; fi
  done
  local end=$((SECONDS + 60))
  until nodes_ready; do
    if sinfo -h -N -p debug -o '%T' 2>/dev/null | grep -qE 'down|drain'; then
      scontrol update nodename="$(node_names | paste -sd,)" state=resume 2>/dev/null || true
    fi
    if [ $SECONDS -ge $end ]; then
      log "nodes not ready after 60 s:"; sinfo -N -l >&2 || true
      tail -n 20 "$LOG"/slurmd-*.log "$LOG/slurmctld.log" >&2 || true
      return 1
    fi
    sleep 0.25
  done
}

# stop_pidfiles FILE...: SIGTERM every live daemon named by a pid file at once (each takes ~2 s to
# exit), wait up to 10 s for all of them, then SIGKILL what is left
stop_pidfiles() {
  local f pids=() pid i
  for f in "$@"; do
    alive "$f" "$(basename "$f" .pid | sed 's/-.*//')" || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  for i in $(seq 1 40); do
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=; done
    [ -z "${pid:-}" ] && return 0
    sleep 0.25
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

stop_slurm() { stop_pidfiles "$RUN"/slurmd-*.pid "$RUN/slurmctld.pid"; }

stop_all() {
  if command -v mysqladmin >/dev/null && mysqladmin ping >/dev/null 2>&1; then mysqladmin shutdown || true; fi &
  stop_pidfiles "$RUN"/slurmd-*.pid "$RUN/slurmctld.pid" "$RUN/slurmdbd.pid" /run/munge/munged.pid
  wait
}

status() {
  local f
  for f in /run/munge/munged.pid /run/mysqld/mysqld.pid $RUN/slurmdbd.pid $RUN/slurmctld.pid $RUN/slurmd-*.pid; do
    [ -e "$f" ] && printf '%-32s pid=%-8s %s\n' "$f" "$(cat "$f")" "$(alive "$f" && echo alive || echo DEAD)"
  done
  sinfo -N -o '%N %P %T %c %m %G' 2>&1 || true
}

case "$ACTION" in
  start)
    t0=$EPOCHREALTIME
    # one start at a time (parallel test sessions may call this together)
    mkdir -p "$RUN"; exec 9>"$RUN/start-local-cluster.lock"
    flock -w 300 9 || { log "another start still holds $RUN/start-local-cluster.lock after 300 s"; exit 1; }
    install_pkgs
    write_configs
    [ "$GPUS" -gt 0 ] && make_fake_gpus
    start_munge
    if [ "$ACCT" = 1 ]; then start_mariadb; create_db_user; start_slurmdbd; fi
    start_slurm
    log "cluster '$CLUSTER' up ($NODES nodes, $GPUS fake GPU(s) each) in $(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $t0}") s"
    sinfo
    ;;
  stop) stop_all ;;
  status) status ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
