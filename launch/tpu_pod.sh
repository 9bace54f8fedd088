#!/usr/bin/env bash
# Run one freqjax command on every worker of a Cloud TPU VM slice (created if it does not exist).
#
#   launch/tpu_pod.sh --name my-v4-32 --zone us-central2-b --type v4-32 -- \
#       python -m freqjax.main --config configs/efun.py:efun_s_plus --workdir gs://BUCKET/efun_s_plus
#
# Steps, each a gcloud command (--dry-run prints them all and runs none):
#   1. describe the TPU VM; if it does not exist, create it (--type and --version);
#   2. copy this checkout (tracked and untracked, not ignored, files) to ~/freqjax on every worker;
#   3. install it on every worker: a venv, then pip install -c constraints.txt -e . "jax[tpu]"
#      (the README's TPU line; skipped when the worker's venv already has freqjax; --reinstall forces it);
#   4. run COMMAND on all workers at once (--worker=all) in ~/freqjax with FREQJAX_DISTRIBUTED=1,
#      so freqjax calls jax.distributed.initialize(), which finds the slice's workers by itself.
# The VM is left running; delete it with: gcloud compute tpus tpu-vm delete NAME --zone ZONE
#
# Options:
#   --name NAME          TPU VM name (required)
#   --zone ZONE          zone (required)
#   --type TYPE          accelerator type for creation, e.g. v4-8, v4-32, v5litepod-16 (default v4-8)
#   --version VERSION    TPU software version for creation (default tpu-ubuntu2204-base)
#   --project PROJECT    Google Cloud project (default: gcloud's configured one)
#   --python PYTHON      the workers' Python >= 3.11 for the venv (default python3.11; apt-installed if
#                        missing, as on tpu-ubuntu2204-base whose python3 is 3.10)
#   --spot               create a Spot VM (cheaper, can be pre-empted; freqjax resumes from its workdir)
#   --reinstall          reinstall even if the workers already have freqjax installed
#   --no-run             stop after the install (COMMAND not needed)
#   --dry-run            print every gcloud command instead of running it
set -euo pipefail

die() { echo "tpu_pod.sh: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }

name="" zone="" type="v4-8" version="tpu-ubuntu2204-base" project="" python="python3.11" spot=0 reinstall=0 run=1 dry=0
while (($#)); do
  case $1 in
    --name | --zone | --type | --version | --project | --python)
      (($# >= 2)) || die "$1 needs a value"
      declare "${1#--}=$2"
      shift 2
      ;;
    --spot) spot=1; shift ;;
    --reinstall) reinstall=1; shift ;;
    --no-run) run=0; shift ;;
    --dry-run) dry=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (valid: --name, --zone, --type, --version, --project, --python, --spot, --reinstall, --no-run, --dry-run, -- COMMAND...)" ;;
  esac
done
[[ -n $name ]] || die "--name is required (the TPU VM's name)"
[[ -n $zone ]] || die "--zone is required, e.g. --zone us-central2-b"
[[ $python =~ ^python3\.[0-9]+$ ]] || die "--python must be python3.N (N >= 11), got '$python'"
[[ $type =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] || die "--type must look like v4-8, v4-32 or v5litepod-16, got '$type'"
if ((run)); then
  (($#)) || die "COMMAND is missing: put it after '--', or pass --no-run to only create and install"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
where=(--zone "$zone")
[[ -z $project ]] || where+=(--project "$project")

# One word for a shell: as it is if plain, else in single quotes.
q() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
words() {
  local sep=""
  for w in "$@"; do printf '%s' "$sep"; q "$w"; sep=" "; done
}
# Print a command (quoted, so it can be pasted); run it unless --dry-run.
gc() {
  words gcloud "$@"
  echo
  ((dry)) || gcloud "$@"
}

run_cmd=$(words "$@")
install="set -e; mkdir -p ~/freqjax; tar -xzf ~/freqjax.tgz -C ~/freqjax; cd ~/freqjax; \
command -v $python >/dev/null || (sudo apt-get update -q && sudo apt-get install -y -q $python $python-venv); \
if [ $reinstall = 1 ] || ! .venv/bin/python -c \"import freqjax, jax\" 2>/dev/null; then \
$python -m venv .venv; .venv/bin/pip install -q -U pip; .venv/bin/pip install -c constraints.txt -e . \"jax[tpu]\"; fi"

echo "# 1. the TPU VM: reuse it, or create it if describe fails" >&2
if ((dry)); then
  gc compute tpus tpu-vm describe "$name" "${where[@]}" --format='value(state)'
  echo "# only if describe fails:" >&2
fi
if ((dry)) || ! state=$(gcloud compute tpus tpu-vm describe "$name" "${where[@]}" --format='value(state)' 2>/dev/null); then
  create=(compute tpus tpu-vm create "$name" "${where[@]}" --accelerator-type "$type" --version "$version")
  ((spot)) && create+=(--spot)
  gc "${create[@]}"
else
  echo "tpu_pod.sh: reusing $name (state $state)" >&2
  [[ $state == READY ]] || die "TPU VM $name is $state, not READY (start it, or delete it to recreate)"
fi

echo "# 2. copy this checkout to every worker" >&2
archive=${TMPDIR:-/tmp}/freqjax-$name.tgz
if ((dry)); then
  echo "# (git ls-files --cached --others --exclude-standard | tar -czf $archive -T -)" >&2
else
  (cd "$root" && git ls-files --cached --others --exclude-standard -z | tar --null -czf "$archive" -T -)
fi
gc compute tpus tpu-vm scp "$archive" "$name:~/freqjax.tgz" "${where[@]}" --worker=all

echo "# 3. install on every worker" >&2
gc compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command "$install"

if ((run)); then
  echo "# 4. run on every worker" >&2
  gc compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all \
    --command "cd ~/freqjax && . .venv/bin/activate && FREQJAX_DISTRIBUTED=1 $run_cmd"
fi
