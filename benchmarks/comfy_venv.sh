#!/usr/bin/env bash
# Make a CPU-only Python venv in which ComfyUI's core can run an SD1.5 txt2img headless, for
# benchmarks/comfy_worker.py (driven by `benchmarks/peers.py --comfyui DIR`).
#
#   benchmarks/comfy_venv.sh COMFYUI_DIR [VENV_DIR]     (VENV_DIR defaults to COMFYUI_DIR/.venv-sdflow-bench)
#
# Prints the venv's python path as its last line. Safe to re-run (reuses the venv).
#
# Recipe:
#   1. torch==2.13.0 first (the CPU build; an unpinned torch would pull a multi-GB CUDA build), and kept
#      pinned by a constraints file for every later step so nothing can swap it.
#   2. ComfyUI's requirements.txt minus what a headless benchmark never uses: the web frontend,
#      workflow templates and embedded docs packages, and torch/torchvision/torchaudio (handled here);
#      and minus spandrel (upscale models, comfy_extras only), which requires torchvision.
#      What an SD1.5 txt2img through ComfyUI's core actually imports: torch, torchsde, numpy, einops,
#      transformers (tokenizers), safetensors, Pillow, scipy, tqdm, psutil, pyyaml, av, comfy-kitchen.
#   3. torchvision/torchaudio: tried with --no-deps at the release made for torch 2.13 and kept only if
#      they import beside this torch; otherwise removed. Here both go: the index's torchvision wheels
#      are CUDA builds (their _C.so needs libc10_cuda.so: "operator torchvision::nms does not exist"),
#      and it has no torchaudio for torch 2.13. SD1.5 needs neither: ComfyUI only logs that torchaudio
#      is missing, and benchmarks/comfy_worker.py serves a stand-in for torchvision's top-level
#      imports in other model families' code (it says so on stderr).
#   4. comfy-kitchen (fp8/fp4 kernels) has no torch requirement; kept if it imports, removed otherwise
#      (ComfyUI logs an error and carries on without it).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 COMFYUI_DIR [VENV_DIR]" >&2
  exit 2
fi
COMFY=$(cd "$1" && pwd)
VENV=${2:-$COMFY/.venv-sdflow-bench}
PYTHON=${PYTHON:-python3}
TORCH=2.13.0
TORCHVISION=0.28.0
TORCHAUDIO=2.13.0

[[ -f $COMFY/requirements.txt && -f $COMFY/nodes.py ]] || { echo "not a ComfyUI checkout: $COMFY" >&2; exit 2; }

[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "torch==$TORCH" > "$WORK/constraints.txt"
echo "== torch==$TORCH (CPU)" >&2
"${PIP[@]}" "torch==$TORCH"

# Requirements minus frontend/templates/docs, the torch family and spandrel; "name>=x" and "name" both match.
grep -v -E -i '^[[:space:]]*(comfyui-frontend-package|comfyui-workflow-templates|comfyui-embedded-docs|torch|torchvision|torchaudio|spandrel)([[:space:]=<>~!;\[]|$)' \
  "$COMFY/requirements.txt" > "$WORK/requirements.txt"
"$VENV/bin/python" -m pip uninstall --quiet --yes spandrel >/dev/null 2>&1 || true  # from an older run
echo "== ComfyUI requirements (filtered):" $(grep -v -E '^[[:space:]]*(#|$)' "$WORK/requirements.txt") >&2
"${PIP[@]}" -c "$WORK/constraints.txt" -r "$WORK/requirements.txt"

# Optional extras that must import beside this torch, or go.
try_optional() {  # try_optional DIST==VERSION MODULE
  local spec=$1 module=$2 dist=${1%%==*}
  echo "== trying $spec (--no-deps)" >&2
  : > "$WORK/err"
  if "${PIP[@]}" --no-deps "$spec" 2>"$WORK/err" && "$VENV/bin/python" -c "import $module" 2>"$WORK/err"; then
    echo "   $dist: kept" >&2
  else
    echo "   $dist: left out ($(tail -n1 "$WORK/err" 2>/dev/null))" >&2
    "$VENV/bin/python" -m pip uninstall --quiet --yes "$dist" >/dev/null 2>&1 || true
  fi
}
try_optional "torchvision==$TORCHVISION" torchvision
try_optional "torchaudio==$TORCHAUDIO" torchaudio
if ! "$VENV/bin/python" -c "import comfy_kitchen" 2>"$WORK/err"; then
  echo "== comfy-kitchen left out ($(tail -n1 "$WORK/err"))" >&2
  "$VENV/bin/python" -m pip uninstall --quiet --yes comfy-kitchen >/dev/null 2>&1 || true
fi

"$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH'), torch.__version__" >&2
echo "$VENV/bin/python"
