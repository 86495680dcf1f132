#!/bin/bash
# Makes the environment of bench_port.py: a virtualenv with the TF2 port's dependencies and a
# src/ tree holding the wheel's `official` package plus the port's assemblenet project (the
# tf-models-official wheel does not ship official/projects/assemblenet).
#
#   WORK=/tmp/port_baseline MODELS=/path/to/a/tensorflow/models/checkout setup.sh
#
# Measured here with tf-models-official 2.19.1 (tensorflow 2.19.1, tf_keras 2.19.0) and the
# port's files at the commits listed in README.md.
set -euo pipefail
WORK=${WORK:-/tmp/port_baseline}
: "${MODELS:?set MODELS to a checkout of github.com/tensorflow/models}"
mkdir -p "$WORK"
cd "$WORK"
if [ ! -x venv/bin/python ]; then
  python3.11 -m venv venv
  venv/bin/pip install -q --upgrade pip
  venv/bin/pip install -q 'tf-models-official==2.19.*'
  # tensorflow-datasets pulls tensorflow-metadata built for protobuf 6; TF 2.19 pins 5.x.
  venv/bin/pip install -q 'tensorflow-metadata<1.18'
fi
rm -rf src && mkdir src
cp -r venv/lib/python3.11/site-packages/official src/official
find src -name __pycache__ -prune -exec rm -rf {} +
mkdir -p src/official/projects/assemblenet/modeling src/official/projects/assemblenet/configs
for f in modeling/assemblenet.py modeling/assemblenet_plus.py modeling/rep_flow_2d_layer.py \
         configs/assemblenet.py; do
  cp "$MODELS/official/projects/assemblenet/$f" "src/official/projects/assemblenet/$f"
done
touch src/official/projects/assemblenet/__init__.py \
      src/official/projects/assemblenet/configs/__init__.py \
      src/official/projects/assemblenet/modeling/__init__.py
echo "ready: $WORK/venv/bin/python bench_port.py --src=$WORK/src"
