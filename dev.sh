#!/usr/bin/env bash
# Set up everything on a fresh Linux machine, then run the demo or the test suite.
#   bash dev.sh demo   napari with the plugin and sample data (headless: writes demo-output/)
#   bash dev.sh test   the whole test suite (ruff + pytest, GUI tests under Xvfb)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

system_packages() {
  # Xvfb and the X/GL libraries Qt needs to show napari's canvas on a virtual screen.
  local pkgs="xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-randr0
    libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1
    libglib2.0-0 libfontconfig1 libdbus-1-3"
  local missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  if command -v apt-get >/dev/null; then
    echo "installing system packages:$missing"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
      || echo "warning: could not install$missing; GUI tests need them" >&2
  else
    echo "warning: no apt-get; install Xvfb and the Qt X11 libraries yourself for GUI tests" >&2
  fi
}

python_env() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local pip="$VENV/bin/pip install -q --retries 0 --disable-pip-version-check"
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
      $pip "torch>=2.1"
    else
      # No GPU: the CPU build, not the multi-GB CUDA one a bare `torch` resolves to.
      $pip "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu 2>&1 \
        | grep -v -e "Retrying" -e "NewConnectionError" -e "is ignored" || true
    fi
  fi
  $pip -e ".[testing]" 2>&1 | grep -v -e "is ignored" -e "Retrying" || true
  "$VENV/bin/python" -c "import torch, napari_adl_denoise" # fail loudly if the install did not work
}

case "${1:-}" in
  demo)
    if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then system_packages; fi
    python_env
    if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
      exec "$VENV/bin/python" -m napari_adl_denoise.demo --viewer
    fi
    exec "$VENV/bin/python" -m napari_adl_denoise.demo --output demo-output
    ;;
  test)
    system_packages
    python_env
    "$VENV/bin/ruff" check src tests training benchmarks docs
    "$VENV/bin/ruff" format --check src tests training benchmarks docs
    exec "$VENV/bin/python" -m pytest "${@:2}"
    ;;
  *)
    echo "usage: bash dev.sh demo|test [pytest args]" >&2
    exit 2
    ;;
esac
