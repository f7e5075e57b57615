#!/usr/bin/env bash
# One setup path for users, the README and CI.
#
#   bash scripts/setup.sh          # runtime: .venv with earshot and its pipeline tools
#   bash scripts/setup.sh --dev    # + test tools
#   bash scripts/setup.sh --browser  # + test tools, chromium + chromedriver (apt), selenium
#
# On a fresh Debian machine with Python 3.11 and no GPU it creates .venv, installs
# ffmpeg from apt when missing, installs everything under constraints.txt (CPU torch
# pinned: nothing can pull CUDA torch), makes the CUDA-built torchvision/torchaudio
# wheels importable on CPU torch (components/torch_compat.py) and checks that no CUDA
# torch crept in. Where a torch is already installed in .venv (CUDA or CPU, e.g. on a
# GPU machine: `python -m venv .venv && .venv/bin/pip install torch torchvision
# torchaudio` first), it is kept, and the compat layer does nothing.
# Idempotent: a second run with nothing to do only checks a stamp (seconds).
# It prints one line per step; the full output of apt and pip goes to .venv/setup.log,
# and a failed step prints that log's last lines and its path.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=runtime
for arg in "$@"; do
  case "$arg" in
    --dev) [ "$MODE" = browser ] || MODE=dev ;;
    --browser) MODE=browser ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --dev or --browser)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
VENV=.venv
PY="$VENV/bin/python"
LOG="$VENV/setup.log"
mkdir -p "$VENV"
echo "# scripts/setup.sh $* ($(date -u +%FT%TZ))" >> "$LOG"

# Every line of a step's output into $LOG; on a terminal, the package being fetched on one line.
show_progress() {
  local line
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$LOG"
    if [ -t 1 ] && [[ $line == Collecting* || $line == *Downloading* ]]; then
      printf '\r\033[K  %.100s' "$line"
    fi
  done
  if [ -t 1 ]; then printf '\r\033[K'; fi
}

# run_step WHAT CMD...: one line here, CMD's output in $LOG; on failure its tail and path.
run_step() {
  local what=$1; shift
  say "$what (log: $LOG)"
  if ! { "$@" 2>&1 | show_progress; }; then
    echo "setup.sh: failed: $what. The last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    echo "setup.sh: the full log is $PWD/$LOG" >&2
    exit 1
  fi
}

# 1. ffmpeg (Debian's: torchcodec needs its libraries; stages call the binary).
if ! command -v ffmpeg >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: ffmpeg is missing and apt-get is not available: install ffmpeg yourself" >&2; exit 1
  fi
  run_step "apt-get update" $SUDO apt-get update
  run_step "installing ffmpeg" $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg
fi

# 1b. Debian's chromium and its driver for the browser test (tests/browser, `pytest -m browser`).
if [ "$MODE" = browser ] && ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: chromium/chromedriver are missing and apt-get is not available: install them yourself" >&2; exit 1
  fi
  run_step "apt-get update" $SUDO apt-get update
  run_step "installing chromium and chromium-driver" \
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
fi

# 2. The virtual environment.
if [ ! -x "$PY" ]; then
  BASE=${PYTHON:-$(command -v python3.11 || command -v python3)}
  "$BASE" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "setup.sh: Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
  run_step "creating $VENV with $BASE" "$BASE" -m venv "$VENV"
fi

# 3. Nothing to do when the inputs of the last successful setup are unchanged.
STAMP="$VENV/.earshot-setup-$MODE"
DIGEST=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$DIGEST" ] && "$PY" -c 'import components, torch' 2>/dev/null; then
  say "up to date ($MODE)"
  exit 0
fi

# 4. Constraints: the CPU pins, or the versions of a torch that is already there.
CONSTRAINTS=$(mktemp); trap 'rm -f "$CONSTRAINTS"' EXIT
EXISTING=$("$PY" -c 'import importlib.metadata as m
try: print(m.version("torch"))
except m.PackageNotFoundError: pass' 2>/dev/null || true)
if [ -n "$EXISTING" ] && [ "${EXISTING%%+*}" != "2.13.0" ]; then
  say "keeping the torch already installed ($EXISTING)"
  grep -v -E '^(torch|torchvision|torchaudio|torchcodec)==' constraints.txt > "$CONSTRAINTS"
  "$PY" - >>"$CONSTRAINTS" <<'PYEOF'
import importlib.metadata as m
for name in ("torch", "torchvision", "torchaudio"):
    try:
        print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass
PYEOF
  KEEP_TORCH=1
else
  cp constraints.txt "$CONSTRAINTS"
  KEEP_TORCH=0
fi

# 5. Install (pip reuses its cache; resemblyzer's declared deps pull a broken sdist).
EXTRA=""; [ "$MODE" = dev ] && EXTRA="[dev]"; [ "$MODE" = browser ] && EXTRA="[dev,browser]"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
run_step "upgrading pip, setuptools, wheel" "$PY" -m pip install --upgrade "pip>=24" setuptools wheel
if [ "$KEEP_TORCH" = 0 ]; then
  run_step "installing torch 2.13.0 (CPU)" env PIP_CONSTRAINT="$CONSTRAINTS" "$PY" -m pip install "torch==2.13.0"
fi
run_step "installing earshot$EXTRA and its packages (first run: a few minutes)" \
  env PIP_CONSTRAINT="$CONSTRAINTS" "$PY" -m pip install -e ".$EXTRA"
run_step "installing resemblyzer" env PIP_CONSTRAINT="$CONSTRAINTS" "$PY" -m pip install --no-deps "resemblyzer==0.1.4"

# 6. The compat layer (written only where needed) and the checks.
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
run_step "checking the torch compat layer" "$PY" -m components.torch_compat --write-pth "$SITE"
"$PY" - "$KEEP_TORCH" <<'PYEOF'
import shutil, sys
import torch, torchvision, torchaudio  # noqa: F401  (the compat layer makes these import)
keep = sys.argv[1] == "1"
if not keep and shutil.which("nvidia-smi") is None and torch.version.cuda is not None:
    sys.exit(f"setup.sh: a CUDA torch ({torch.__version__}) crept in on a machine without a GPU")
print(f"[setup] torch {torch.__version__} (cuda: {torch.version.cuda}), torchvision {torchvision.__version__}, "
      f"torchaudio {torchaudio.__version__}")
PYEOF
echo "$DIGEST" > "$STAMP"
say "done: activate with 'source $VENV/bin/activate'"
