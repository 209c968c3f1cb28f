#!/usr/bin/env bash
# The README's first command: install pawnet into .venv, then run its main job.
#
#   bash scripts/quickstart.sh [DATA [PHOTO]]
#
# DATA is the cats-vs-dogs photos (default ../shared/datasets/cats-vs-dogs, beside the checkout);
# PHOTO is the photo to label (default DATA/test_set/dogs/dog.4001.jpg).
set -euo pipefail

# Paths named on the command line are read from the folder the script was started in.
caller=$PWD
cd "$(dirname "$0")/.."
from_caller() { case $1 in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }
data=../shared/datasets/cats-vs-dogs
if [ $# -ge 1 ]; then data=$(from_caller "$1"); fi
photo=$data/test_set/dogs/dog.4001.jpg
if [ $# -ge 2 ]; then photo=$(from_caller "$2"); fi

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "pawnet needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)" >&2
    exit 2
fi
if [ ! -d "$data" ]; then
    echo "no photos at $data; name the folder: bash scripts/quickstart.sh DATA" >&2
    exit 2
fi
if [ ! -f "$photo" ]; then
    echo "no photo at $photo to label; name one: bash scripts/quickstart.sh DATA PHOTO" >&2
    exit 2
fi

python3 -m venv .venv
. .venv/bin/activate
# On a CPU-only machine take the CPU build of torch: torch==2.13.0 is the CPU build on the package
# index pawnet is set up with, but elsewhere an unpinned `pip install torch` on Linux brings a CUDA
# build of several gigabytes (PyTorch's install page gives the CPU command). pawnet asks only for
# torch>=2.4, so a build installed beforehand is kept: install it into .venv, drop the pin below.
pip install torch==2.13.0 -e .

# 1. The model shipped with pawnet labels a photo.
pawnet predict "$photo"

# 2. The tutorial's network, trained for 25 epochs into runs/seed; a second run of this script
#    does not train again: --resume says the run is finished, or continues it if it was stopped.
if [ -f runs/seed/config.json ]; then
    echo "runs/seed holds a run already: continuing it if it was stopped, else leaving it as it is"
    echo "(it trains on the data it was started with; remove runs/seed to train on $data)"
    pawnet train --resume runs/seed
else
    pawnet train "$data" --out runs/seed
fi

# 3. The network just trained labels the same photo.
pawnet predict runs/seed "$photo"
