#!/usr/bin/env bash
# The rehearsal (scripts/rehearse.py) at the gpt2 profile's full sizes on a GPU machine,
# within a 10-minute budget: chapters run one at a time in toc order on cuda, each cell's
# time and peak host memory recorded; chapters not started by the deadline are listed as
# such. Prints the per-chapter table; the per-cell record goes to _build/rehearsal_gpu.json.
#
#   scripts/rehearse_gpu.sh                 # on a GPU machine (needs nvidia-smi)
#   scripts/rehearse_gpu.sh --dry-run       # the CPU path at tiny sizes, first chapter only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [[ "${1:-}" == "--dry-run" ]]; then
  shift
  exec "$PY" scripts/rehearse.py "${@:-book/intro/01_running_saes}" \
    --sizes '{"n_seqs": 8, "batch_size": 4, "gen_tokens": 4, "train_tokens": 4096}' \
    --deadline-s 570 --json _build/rehearsal_gpu_dryrun.json
fi
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "rehearse_gpu.sh: no GPU here (nvidia-smi missing); use --dry-run for the CPU path" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'"
exec "$PY" scripts/rehearse.py "$@" --full --memory-gb 100 --deadline-s 570 \
  --json _build/rehearsal_gpu.json
