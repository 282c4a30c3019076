"""Runs: a training command recorded with the four inputs that determine its result.

Terms:

- *run*: one execution of a command under ``cas run`` (or a ``cas.start_run()`` block in a
  notebook), from start to exit.
- *record*: what a finished run leaves, a canonical JSON object in the store under
  ``runs/<2>/<id>``; its id is the BLAKE3 of its bytes (docs/format.md, "Run record").
- *fingerprint*: the hash of a canonical encoding of one input. ``code`` is the effective source
  tree (commit's tree plus uncommitted and untracked files, minus data pointers, ``--config``
  files and outputs); ``data`` the pointers' manifest ids; ``config`` the command line, config
  files, seed and allow-listed environment variables; ``env`` the interpreter, platform and
  installed distributions. ``inputs`` hashes the four together: equal inputs, equal ``inputs``.
- *blob*: a small file's bytes stored raw under ``blobs/<2>/<BLAKE3>`` (uncommitted source
  changes, untracked files, config files), so a repro can restore them exactly.
- *catalog*: ``.cas/state/runs.sqlite``, an index of the records for ``cas runs``, plus one row
  per run still going (so a killed run shows as not finished). Rebuildable from the records.
- *repro*: a rerun of a record in a temporary worktree with its code, data, config and seed,
  whose metrics are compared with the record's under a tolerance.
- *reuse*: a cache hit: a successful run with the same ``inputs`` and outputs is restored
  instead of run.

Modules, one job each: :mod:`record` (format), :mod:`capture` (the four inputs),
:mod:`catalog` (SQLite index), :mod:`session` (start, finish, in-process helpers' channel),
:mod:`api` (what ``import cas`` exposes), :mod:`compare` (``runs diff`` and repro's checks),
:mod:`repro` (the rerun) and :mod:`transfer` (push and fetch of records).
"""
