#!/usr/bin/env bash
# The GPU benchmark in one command (bench/gpu_bench.py says what it measures).
#
#   bench/gpu.sh --fetch-wheels   # HERE, with network: wheels for a bare CUDA machine -> bench/wheels/
#   bench/gpu.sh [args]           # THERE: a CUDA machine with Python 3.12 and its own torch, no network,
#                                 # no ROS; installs what it lacks from bench/wheels/ into a private
#                                 # folder (never torch, never over the machine's packages), then runs
#   bench/gpu.sh --cpu-smoke      # the same code on the CPU with tiny sizes, in this repo's venv (CI)
#
# Extra arguments go to bench/gpu_bench.py. The last line printed is one JSON object.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/bench/wheels"
PY="${PYTHON:-python3}"
# Pinned as in requirements/model.txt: the numerics of the code under test depend on them.
PINNED="transformers==4.57.6 tokenizers==0.22.2 safetensors==0.8.0 huggingface_hub==0.36.2"
# Wheels that only go in when the machine has no such distribution at all.
COMMON="numpy pillow pyyaml tqdm regex filelock packaging requests fsspec typing_extensions"

fetch_wheels() {
  local target_py="${WHEEL_PYTHON_VERSION:-3.12}"
  mkdir -p "$WHEELS"
  # Binary wheels for the target interpreter; the resolver follows their dependencies (none is torch).
  "$PY" -m pip download -q --dest "$WHEELS" --only-binary=:all: --python-version "$target_py" \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 \
    $PINNED $COMMON "portalocker"
  # omegaconf pins antlr4 4.9, which PyPI has only as a source archive: no resolver here.
  "$PY" -m pip download -q --dest "$WHEELS" --only-binary=:all: --no-deps "omegaconf==2.3.0" "hydra-core==1.3.8"
  # Source-only packages become pure-Python wheels here. sam2 without its CUDA extension (as
  # scripts/setup.sh installs it; the extension only serves hole filling, which Sa2VA leaves off).
  "$PY" -m pip wheel -q --no-deps --wheel-dir "$WHEELS" "antlr4-python3-runtime==4.9.3" "iopath==0.1.10"
  SAM2_BUILD_CUDA=0 SAM2_BUILD_ALLOW_ERRORS=1 "$PY" -m pip wheel -q --no-deps --no-build-isolation \
    --wheel-dir "$WHEELS" "sam2==1.1.0"
  if ls "$WHEELS" | grep -qi '^torch-'; then
    echo "gpu.sh: a torch wheel got into $WHEELS; remove it (the GPU machine's torch must stay)" >&2
    exit 1
  fi
  du -sh "$WHEELS"
}

install_missing() {  # unpack the wheels the machine lacks into $SITE (a wheel is a zip archive)
  SITE="${SA2VA_GPU_SITE:-${TMPDIR:-/tmp}/sa2va_gpu_site}"
  mkdir -p "$SITE"
  "$PY" - "$WHEELS" "$SITE" "$PINNED" <<'EOF'
import importlib.metadata as md
import re
import sys
import zipfile
from pathlib import Path

wheels, site, pinned = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split()
always = {re.sub(r"[-_.]+", "_", p.split("==")[0]).lower() for p in pinned}
always |= {"sam2", "hydra_core", "omegaconf", "antlr4_python3_runtime", "iopath"}
installed = {re.sub(r"[-_.]+", "_", d.metadata["Name"]).lower() for d in md.distributions()}
done = []
for whl in sorted(wheels.glob("*.whl")):
    name = whl.name.split("-")[0].lower()
    if name == "torch" or name.startswith("nvidia_"):
        sys.exit(f"refusing {whl.name}: the machine's torch stays as it is")
    if name not in always and name in installed:
        continue  # the machine's own copy wins
    marker = site / f".{whl.name}.done"
    if not marker.exists():
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)
        for data in site.glob("*.data"):  # purelib/platlib of the few wheels that have them
            for sub in ("purelib", "platlib"):
                for item in (data / sub).glob("*") if (data / sub).exists() else []:
                    item.rename(site / item.name)
        marker.touch()
    done.append(name)
print(f"gpu.sh: {len(done)} packages from bench/wheels in {site}: {' '.join(done)}")
EOF
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
}

case "${1:-}" in
  --fetch-wheels)
    fetch_wheels
    ;;
  --cpu-smoke)
    cd "$ROOT"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    exec "$PY" bench/gpu_bench.py "$@"
    ;;
  *)
    cd "$ROOT"
    [ -d "$WHEELS" ] || { echo "gpu.sh: $WHEELS is missing: run 'bench/gpu.sh --fetch-wheels' first" >&2; exit 1; }
    torch_before=$("$PY" -c 'import torch; print(torch.__version__, torch.__file__)')
    install_missing
    torch_after=$("$PY" -c 'import torch; print(torch.__version__, torch.__file__)')
    [ "$torch_before" = "$torch_after" ] || { echo "gpu.sh: torch changed ($torch_before -> $torch_after)" >&2; exit 1; }
    echo "gpu.sh: torch $torch_after"
    exec "$PY" bench/gpu_bench.py "$@"
    ;;
esac
