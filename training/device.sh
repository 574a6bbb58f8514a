#!/usr/bin/env bash
# One training run on a lent GPU machine (the session's device tool), prepared so that a session
# that is lent one spends its few minutes training, not installing. The machine has PyTorch with
# CUDA, numpy, scipy, scikit-image, tifffile, imageio, safetensors and pyyaml, and no network; the
# package runs from src/ with the few pure-Python dependencies it lacks carried as wheels.
#
# Here, once per checkout (the wheels are ignored, never committed):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     platformdirs==4.14.9 nibabel==5.4.2
# Then one call of the device tool (data and any earlier checkpoint travel as carried paths):
#   run(command="bash training/device.sh training/configs/adl-3d-guided.yaml 8",
#       carry=[".whl", "training/data/3d", "runs/adl-3d-guided"], timeout_s=600)
# It resumes from runs/<name>/checkpoint.pt when one was carried, trains for MINUTES on CUDA, and
# leaves in $OUT the run's kept weights, its checkpoint when under the tool's 16 MiB per file (the
# weights alone otherwise), and the log. Put them back under runs/<name>/ here, then
# `adl-denoise train CONFIG --resume` continues on whatever device, or `training/bundle.py` bundles.
# DEVICE=cpu runs the same steps here, as a check of this script.
set -euo pipefail
config=${1:?usage: bash training/device.sh CONFIG MINUTES}
minutes=${2:?usage: bash training/device.sh CONFIG MINUTES}
device=${DEVICE:-cuda}
out=${OUT:-runs/device-out}
mkdir -p "$out"
python=python3
[ -x .venv/bin/python ] && [ "$device" = cpu ] && python=.venv/bin/python
if [ -d .whl ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:src
else
    export PYTHONPATH=src
fi
name=$("$python" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$config")
run=runs/$name
"$python" -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'no cuda', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
resume=()
[ -f "$run/checkpoint.pt" ] && resume=(--resume) && echo "resuming $run/checkpoint.pt"
set +e
PYTHONUNBUFFERED=1 "$python" -c "import sys; from napari_adl_denoise.cli import main; sys.exit(main())" \
    train "$config" "${resume[@]}" --device "$device" --max-minutes "$minutes" 2>&1 | tee "$out/$name.log"
status=${PIPESTATUS[0]}
set -e
cp "$run"/*.safetensors "$out"/ 2>/dev/null || echo "no weights written"
if [ -f "$run/checkpoint.pt" ] && [ "$(stat -c %s "$run/checkpoint.pt")" -lt 16000000 ]; then
    cp "$run/checkpoint.pt" "$out"/
fi
ls -l "$out"
exit "$status"
