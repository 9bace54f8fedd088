#!/usr/bin/env bash
# N processes of one command on this host, joined into one JAX job over localhost.
#
#   launch/local_multiprocess.sh -n 2 --cpu-devices 4 -- \
#       python -m freqjax.main --config configs/cifar_quick.py:synthetic --workdir runs/two
#
# Each process gets JAX_COORDINATOR_ADDRESS=localhost:PORT, JAX_NUM_PROCESSES=N and
# JAX_PROCESS_ID=i, which freqjax.train.parallel.initialize_distributed passes to
# jax.distributed.initialize: the same path as several hosts, on one. Output lines are prefixed
# with "[i] "; --logdir DIR also keeps each process's output in DIR/process_i.log. If one process
# fails, the others are stopped (they would wait for it at the next collective) and the script
# exits with the failed process's status.
#
# Options:
#   -n, --num-processes N   number of processes (default 2)
#   --cpu-devices K         run on the CPU with K devices per process (JAX_PLATFORMS=cpu and
#                           XLA_FLAGS=--xla_force_host_platform_device_count=K)
#   --one-gpu-each          process i uses local GPU i only (JAX_LOCAL_DEVICE_IDS=i)
#   --port PORT             coordinator port (default: a free one)
#   --logdir DIR            also write DIR/process_<i>.log
set -euo pipefail

die() { echo "local_multiprocess.sh: $*" >&2; exit 2; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

num=2
cpu_devices=""
one_gpu_each=0
port=""
logdir=""
while (($#)); do
  case $1 in
    -n | --num-processes) num=${2-}; shift 2 || die "-n needs a value" ;;
    --cpu-devices) cpu_devices=${2-}; shift 2 || die "--cpu-devices needs a value" ;;
    --one-gpu-each) one_gpu_each=1; shift ;;
    --port) port=${2-}; shift 2 || die "--port needs a value" ;;
    --logdir) logdir=${2-}; shift 2 || die "--logdir needs a value" ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (valid: -n N, --cpu-devices K, --one-gpu-each, --port PORT, --logdir DIR, -- COMMAND...)" ;;
  esac
done
(($#)) || die "COMMAND is missing: put it after '--', e.g. -- python -m freqjax.main --config ... --workdir ..."
[[ $num =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer, got '$num'"
[[ -z $cpu_devices || $cpu_devices =~ ^[1-9][0-9]*$ ]] || die "--cpu-devices must be a positive integer, got '$cpu_devices'"
[[ -z $port || ($port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535) ]] || die "--port must be 1-65535, got '$port'"
if [[ -z $port ]]; then  # a port nobody listens on now
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
fi
if [[ -n $cpu_devices ]]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$cpu_devices"
fi
[[ -z $logdir ]] || mkdir -p "$logdir"
# Explicit settings win over a Slurm/TPU environment the shell may carry.
unset FREQJAX_DISTRIBUTED
export JAX_COORDINATOR_ADDRESS="localhost:$port" JAX_NUM_PROCESSES="$num"
echo "local_multiprocess.sh: $num processes, coordinator $JAX_COORDINATOR_ADDRESS${cpu_devices:+, $cpu_devices CPU devices each}" >&2

set -m  # each process (pipeline) in its own process group, so that it can be stopped as a whole
pids=()
for ((i = 0; i < num; i++)); do
  (
    set +m -o pipefail
    export JAX_PROCESS_ID=$i
    ((one_gpu_each)) && export JAX_LOCAL_DEVICE_IDS=$i
    if [[ -n $logdir ]]; then
      "$@" 2>&1 | tee "$logdir/process_$i.log" | sed -u "s/^/[$i] /"
    else
      "$@" 2>&1 | sed -u "s/^/[$i] /"
    fi
  ) &
  pids+=($!)
done

set +m  # (no job-status lines from the shell)

stop_all() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

status=0
for ((k = 0; k < num; k++)); do
  rc=0
  wait -n || rc=$?
  if ((rc != 0)); then
    status=$rc
    echo "local_multiprocess.sh: a process exited with status $rc; stopping the others" >&2
    stop_all
    wait || true
    break
  fi
done
exit "$status"
