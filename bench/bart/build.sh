#!/usr/bin/env bash
# Build BART 1.0 with PyTorch support (TorchScript priors: `bart sample --external-graph`)
# against the libtorch inside this project's pip `torch` wheel.
#
#   bench/bart/build.sh SOURCE.tar.gz [PREFIX]      (PREFIX default: ./build/bart-1.0)
#
# SOURCE: the BART 1.0 source archive, e.g. ../shared/vendor/bart-1.0.00-731bfd3.tar.gz (never
# copied into this repository). Installs the Debian build dependencies by package name when
# apt-get is available (root or sudo). About 5 minutes with -j2 on a 2-core machine.
# The binary links to the torch it was built against: rebuild after changing the torch version.
# Afterwards: PREFIX/bart version  ->  v1.0.00 ; tests/test_bart_torchscript.py uses it when
# MRIPRIOR_BART10=PREFIX/bart is set (or a PyTorch-enabled `bart` is on the PATH).
set -euo pipefail

src=${1:?usage: bench/bart/build.sh SOURCE.tar.gz [PREFIX]}
prefix=${2:-build/bart-1.0}
python=${PYTHON:-.venv/bin/python}
jobs=${JOBS:-$(nproc)}

if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    pkgs="make gcc g++ libfftw3-dev liblapacke-dev libpng-dev libopenblas-dev"
    if ! dpkg -s $pkgs >/dev/null 2>&1; then
        $SUDO apt-get update -qq || true
        $SUDO apt-get install -y -qq $pkgs
    fi
fi

torch_dir=$("$python" -c "import torch, os; print(os.path.dirname(torch.__file__))")
rm -rf "$prefix.tmp"
mkdir -p "$prefix.tmp"
tar -xzf "$src" -C "$prefix.tmp"
(cd "$prefix.tmp" && make -j"$jobs" PYTORCH=1 PYTORCH_BASE="$torch_dir" bart >build.log 2>&1) || {
    tail -30 "$prefix.tmp/build.log" >&2
    echo "bench/bart/build.sh: build failed (log: $prefix.tmp/build.log)" >&2
    exit 1
}
rm -rf "$prefix"
mv "$prefix.tmp" "$prefix"
"$prefix/bart" version
echo "built $prefix/bart (torch from $torch_dir)"
