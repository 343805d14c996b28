#!/usr/bin/env bash
# Submit the engine to SLURM: submit.sh CONFIG WORKDIR [NODES] [extra sbatch options...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 CONFIG WORKDIR [NODES] [sbatch options...]" >&2; exit 2; }
config=$(readlink -f "$1"); workdir=$(readlink -f "$2"); nodes=${3:-1}; shift $(( $# >= 3 ? 3 : 2 ))
venv=${DSA110_VENV:-$(readlink -f "$here/../.venv")}
[ -x "$venv/bin/dsa110-engine" ] || { echo "no engine in $venv (run make first)" >&2; exit 2; }
mkdir -p "$workdir/logs"
exec sbatch --nodes="$nodes" --chdir="$workdir" \
  --output="$workdir/logs/dsa110-%j.out" --error="$workdir/logs/dsa110-%j.err" \
  --export=ALL,DSA110_VENV="$venv",DSA110_CONFIG="$config",DSA110_WORKDIR="$workdir" \
  "$@" "$here/dsa110.sbatch"
