#!/usr/bin/env bash
# The whole loop on the embedded default (a local store in a temp Git repository, a SQLite
# source): version a dataset, freeze a query, train with `cas run`, change the data, train again,
# compare the runs, and prove the first run still reproduces.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
cd "$demo"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

git init -q -b main proj && cd proj
git config user.email demo@example.com && git config user.name demo
cp "$here/demo_train.py" train.py
mkdir -p data
echo '{"free": 0, "pro": 1}' > data/labels.json
python3 - <<'PY'
import random, sqlite3
rng = random.Random(42)
db = sqlite3.connect("app.db")
db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, age INTEGER, visits INTEGER, plan TEXT)")
rows = []
for i in range(2000):
    age, visits = rng.randint(18, 80), rng.randint(0, 60)
    plan = "pro" if visits + rng.gauss(0, 8) > 30 else "free"
    rows.append((i, age, visits, plan))
db.executemany("INSERT INTO users VALUES (?, ?, ?, ?)", rows)
db.commit()
PY
printf 'app.db\nmetrics.json\n' > .gitignore

step cas init
step cas add data/
step cas snapshot-query "SELECT * FROM users ORDER BY id" --source sqlite:///app.db --name users
git add .gitignore train.py && git commit -qm "data, snapshot v1, training script"

step cas run --name baseline --metrics metrics.json --out model/ --seed 42 -- python3 train.py
first=$(cas runs --json | python3 -c "import json, sys; print(json.load(sys.stdin)[0]['id'])")

# new users arrive; freeze the table again and retrain on it
python3 - <<'PY'
import random, sqlite3
rng = random.Random(7)
db = sqlite3.connect("app.db")
rows = [(2000 + i, rng.randint(18, 80), v := rng.randint(0, 60), "pro" if v > 30 else "free")
        for i in range(400)]
db.executemany("INSERT INTO users VALUES (?, ?, ?, ?)", rows)
db.commit()
PY
step cas snapshot-query "SELECT * FROM users ORDER BY id" --source sqlite:///app.db --name users
step cas status
git commit -qm "snapshot v2"
step cas diff HEAD~1 HEAD
step cas run --name baseline --metrics metrics.json --out model/ --seed 42 -- python3 train.py
second=$(cas runs --json | python3 -c "import json, sys; print(json.load(sys.stdin)[-1]['id'])")

step cas runs
step cas runs diff "$first" "$second"
step cas repro "$first"
echo
echo "demo finished: two runs recorded, their difference is the data, and run ${first:0:12} reproduced"
