#!/usr/bin/env bash
# A private single-node SLURM cluster in one folder, for digin's sweep tests (make test-slurm) and for trying
# `digin -m hydra/launcher=slurm` by hand. Needs root and Debian 12's slurmctld, slurmd, munge (+ slurmdbd and
# mariadb-server for accounting): `scripts/slurm/cluster.sh install`.
#
#   scripts/slurm/cluster.sh up DIR [accounting|none]   # start munged (+ mariadbd, slurmdbd), slurmctld, slurmd
#   export SLURM_CONF=DIR/slurm.conf                    # then sbatch / squeue / digin -m use this cluster
#   scripts/slurm/cluster.sh down DIR                   # cancel its jobs, stop its daemons by their pid files
#
# Everything (config, keys, sockets, state, logs, pid files, the database) lives under DIR; the system's
# /etc/slurm, /etc/munge and MariaDB are never used. Ports are free ones picked at start. The partition is `debug`;
# process tracking is proctrack/linuxproc and there is no task plugin, so no cgroups are needed.
set -euo pipefail

usage() { echo "usage: $0 install | up DIR [accounting|none] | down DIR" >&2; exit 2; }

# the daemons in start order; `down` stops them in reverse
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

install() {
  local pkgs=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
  if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
     && command -v munged >/dev/null; then return 0; fi
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "$0 install: needs apt-get as root" >&2; exit 1; }
  apt-get update -q
  # The packages would start the system's own munge / slurm / mariadb services where an init system runs: a
  # policy-rc.d that says no (if none is there) keeps them off; `up` starts private daemons instead.
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; added=1; fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" || rc=$?
  [ -z "$added" ] || rm -f "$policy"
  return $rc
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 2))); do timeout 10 "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "$0: $what did not come up within ${limit}s; logs in $DIR" >&2
  return 1
}

up() {
  DIR=$(realpath -m "$1"); local mode=${2:-none}
  [ "$mode" = accounting ] || [ "$mode" = none ] || usage
  [ "$(id -u)" = 0 ] || { echo "$0 up: the daemons run as root here; run as root" >&2; exit 1; }
  mkdir -p "$DIR"/{munge,state,spool,mysql}
  chmod 700 "$DIR" "$DIR/munge"
  local host; host=$(hostname -s)
  local ctld_port dbd_port db_port slurmd_port
  ctld_port=$(free_port); slurmd_port=$(free_port); dbd_port=$(free_port); db_port=$(free_port)
  local ncpu mem
  ncpu=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)  # half the RAM, in MB: room for other users

  # munge: a fresh key and a private socket; the daemons and clients find it through AuthInfo
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$DIR/munge/munge.key"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.sock" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
  wait_for 20 munged test -S "$DIR/munge/munge.sock"
  ln -sf munge/munged.pid "$DIR/munged.pid"

  local accounting="AccountingStorageType=accounting_storage/none"
  if [ "$mode" = accounting ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$DIR/munge/munge.sock"   # for slurmdbd this names munge's socket (AuthInfo is not used)
    mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --skip-test-db \
      --auth-root-authentication-method=socket >"$DIR/mariadb-install.log" 2>&1
    setsid mariadbd --no-defaults --datadir="$DIR/mysql" --user=root --socket="$DIR/mysql.sock" --port="$db_port" \
      --bind-address=127.0.0.1 --pid-file="$DIR/mariadbd.pid" --log-error="$DIR/mariadbd.log" \
      --innodb-buffer-pool-size=32M --skip-name-resolve >/dev/null 2>&1 &
    wait_for 60 mariadbd mariadb --no-defaults --socket="$DIR/mysql.sock" -u root -e "SELECT 1"
    mariadb --no-defaults --socket="$DIR/mysql.sock" -u root -e \
      "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    # slurmdbd reads slurmdbd.conf next to $SLURM_CONF and refuses one that others can read
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.sock
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
  fi

  cat >"$DIR/slurm.conf" <<EOF
ClusterName=digintest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
$accounting
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$DIR/slurm.conf"
  if [ "$mode" = accounting ]; then
    slurmdbd
    wait_for 60 slurmdbd sacctmgr -i list cluster
    sacctmgr -i add cluster digintest >/dev/null
  fi
  slurmctld
  wait_for 60 slurmctld scontrol ping
  slurmd -N "$host"
  wait_for 60 "slurmd (node idle)" sh -c "sinfo -h -o %t -p debug | grep -qx idle"
  [ "$mode" = none ] || wait_for 60 sacct sacct -n -X
  echo "SLURM_CONF=$SLURM_CONF"
}

down() {
  DIR=$(realpath -m "$1")
  export SLURM_CONF="$DIR/slurm.conf"
  if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
    scancel --full --quiet --partition=debug 2>/dev/null || true  # this cluster's jobs only: SLURM_CONF is ours
    for _ in $(seq 60); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  local i pid
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    local pidfile="$DIR/${DAEMONS[i]}.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  done
}

case "${1:-}" in
  install) install ;;
  up) [ $# -ge 2 ] || usage; up "$2" "${3:-none}" ;;
  down) [ $# -eq 2 ] || usage; down "$2" ;;
  *) usage ;;
esac
