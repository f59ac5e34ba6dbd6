#!/usr/bin/env bash
# Score the default model's maps of real images block by block (.zarr) and in memory (TIFF); print both.
# The images: docs/finetuning_quality.md "How to repeat" (into /tmp/ftq/data). Run from the repository root.
set -euo pipefail
DATA=${DATA:-/tmp/ftq/data}
S="$(pwd)/.venv/bin/segloop"
PY="$(pwd)/.venv/bin/python"
export HF_HUB_OFFLINE=1
work=$(mktemp -d)
cd "$work"
for n in stardist_img2d ecoli_phase_t19 bbbc007_POS0008; do
  extra=""; [ "$n" = ecoli_phase_t19 ] && extra="--convert invert"
  $S predict "$DATA/$n.tif" -o "${n}_prob.ome.zarr" -q --threads 2 $extra
  $PY -c "import sys, zarr, tifffile; tifffile.imwrite(sys.argv[2], zarr.open_group(sys.argv[1], mode='r')['0'][:])" \
      "${n}_prob.ome.zarr" "${n}_probability.tif"
  for t in "--threshold 0.5" "--best-threshold" "--threshold otsu" "--threshold 0.4567"; do
    a=$($S evaluate -p "${n}_prob.ome.zarr" -t "$DATA/${n}_labels.tif" $t --json 2>/dev/null)
    b=$($S evaluate -p "${n}_probability.tif" -t "$DATA/${n}_labels.tif" $t --no-objects --json 2>/dev/null)
    $PY -c "
import json, sys
a, b = json.loads(sys.argv[3]), json.loads(sys.argv[4])
row = lambda r: 't=%.6g dice=%.6f tp=%d fp=%d' % (r['threshold'], r['dice'], r['tp'], r['fp'])
print(sys.argv[1], sys.argv[2], '| zarr', row(a), '| memory', row(b))" "$n" "$t" "$a" "$b"
  done
done
rm -rf "$work"
