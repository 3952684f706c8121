#!/usr/bin/env bash
# Rebuilds contracts/out/*.{abi,bin} from contracts/*.sol with the pinned solc (tools/package.json).
# The artifacts are committed so that building and testing never need the compiler.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
[ -x "$here/node_modules/.bin/solcjs" ] || (cd "$here" && npm ci --no-audit --no-fund)
out="$root/contracts/out"
rm -rf "$out" && mkdir -p "$out"
cd "$root/contracts"
for src in *.sol; do
  "$here/node_modules/.bin/solcjs" --bin --abi --optimize --optimize-runs 200 -o "$out" "$src"
done
# solcjs names files <file>_sol_<Contract>; keep just <Contract>.
for f in "$out"/*_sol_*; do
  mv "$f" "$out/${f##*_sol_}"
done
ls -l "$out"
