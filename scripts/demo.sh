#!/usr/bin/env bash
# The main job on the embedded default: a local store in a temp Git repository.
set -euo pipefail
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
cd "$demo"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

git init -q -b main proj && cd proj
git config user.email demo@example.com && git config user.name demo
mkdir -p data/images data/labels
python3 - <<'PY'
import os, random
rng = random.Random(42)
for i in range(200):
    with open(f"data/images/img{i:03}.bin", "wb") as f:
        f.write(rng.randbytes(rng.randint(1_000, 60_000)))
with open("data/labels/labels.csv", "w") as f:
    f.writelines(f"img{i:03},{i % 3}\n" for i in range(200))
with open("data/model.bin", "wb") as f:
    f.write(rng.randbytes(8 << 20))
PY
step cas init
step cas add data/
step cat data.cas
step git commit -qm "data v1"
echo "img000,edited" >> data/labels/labels.csv
rm data/images/img001.bin
head -c 5000 /dev/urandom > data/images/new.bin
step cas status
step cas add data/
git commit -qm "data v2"
step cas diff HEAD~1 HEAD
step git checkout -q HEAD~1
step cas checkout
step cas status
step git checkout -q main
step cas checkout
printf "\n$ cas ls data.cas --rev HEAD~1 | tail -n 3\n"; cas ls data.cas --rev HEAD~1 | tail -n 3
step cas fsck
echo
echo "demo finished: v1 and v2 of data/ restored byte for byte from the local store"
