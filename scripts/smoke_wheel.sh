#!/usr/bin/env bash
# The package users get, not the editable checkout: build the wheel and the sdist, install the
# wheel into a clean virtual environment, and run cas from outside the source tree: init, add,
# commit, checkout, install-hooks (a Git checkout whose post-checkout hook restores the data: the
# hook scripts reach the wheel through the cas/hookscripts -> ../hooks symlink) and a cas:// read
# through fsspec's entry point. Called by .ci/run; PYTHON picks the interpreter that builds.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset PYTHONPATH

"$py" -m build --outdir "$work/dist" "$src" >"$work/build.log" 2>&1 || {
  cat "$work/build.log"
  exit 1
}
wheel=("$work"/dist/cas_data-*.whl)
sdist=("$work"/dist/cas_data-*.tar.gz)
[ -f "${wheel[0]}" ] && [ -f "${sdist[0]}" ] || { echo "smoke: no wheel or sdist built" >&2; exit 1; }
listing=$("$py" -m zipfile -l "${wheel[0]}")
grep -q 'cas/hookscripts/cas-hook-run' <<<"$listing" ||
  { echo "smoke: the wheel lacks the hook scripts" >&2; exit 1; }

"$py" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "${wheel[0]}"
export PATH="$work/venv/bin:$PATH"
hash -r

cd "$work"
# the installed package, not the source tree, is what runs
where=$(python -c 'import cas, os; print(os.path.dirname(cas.__file__))')
case "$where" in "$work/venv/"*) ;; *) echo "smoke: cas imported from $where" >&2; exit 1 ;; esac
cas --version | grep -q '^cas-data ' || { echo "smoke: cas --version is wrong" >&2; exit 1; }

git init -q proj && cd proj
git config user.email smoke@example.com && git config user.name smoke
cas init -q
mkdir -p data/sub && printf 'one\n' >data/a.txt && printf 'deep\n' >data/sub/b.txt
cas add -q data
git commit -qm v1
printf 'two\n' >data/a.txt
cas add data -q
git commit -qm v2
cas checkout -q --rev HEAD~1 data.cas
[ "$(cat data/a.txt)" = one ] || { echo "smoke: cas checkout --rev did not restore v1" >&2; exit 1; }
git checkout -q HEAD -- data.cas && cas checkout -q
[ "$(cat data/a.txt)" = two ] || { echo "smoke: cas checkout did not restore v2" >&2; exit 1; }

cas install-hooks -q
git checkout -q HEAD~1 2>"$work/hook.log"
[ "$(cat data/a.txt)" = one ] || {
  cat "$work/hook.log"
  echo "smoke: the post-checkout hook did not restore v1" >&2
  exit 1
}
git checkout -q - 2>>"$work/hook.log"
[ "$(cat data/a.txt)" = two ] || { echo "smoke: the post-checkout hook did not restore v2" >&2; exit 1; }

python - <<'EOF'
import fsspec  # cas:// resolves through the wheel's fsspec.specs entry point, cas not imported

assert fsspec.open("cas://data/sub/b.txt").open().read() == b"deep\n"
assert fsspec.open("cas://@HEAD~1/data/a.txt").open().read() == b"one\n"
assert fsspec.open("cas://data/a.txt", rev="HEAD~1").open().read() == b"one\n"
EOF
echo "smoke: the wheel and sdist build; the installed wheel's init, add, commit, checkout, hooks and cas:// work"
