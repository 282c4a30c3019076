"""``cas run --reuse``: a succeeded run with the same ``inputs`` fingerprint and the same
``--out`` targets is a cache hit: its outputs are checked out (fetched from the default remote
if the store lacks them) and a record of status ``reused`` names it, instead of running.

The environment is part of ``inputs``, so a new package version reruns (DVC's run-cache leaves
the environment out). A candidate whose outputs are in no store is skipped.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cas import pointer
from cas import remote as remote_config
from cas.errors import CasError, ObjectMissingError
from cas.runs import record as rec
from cas.runs.catalog import open_synced

if TYPE_CHECKING:
    from cas.runs.session import Session


@dataclass
class ReuseHit:
    source: str
    run_id: str
    restored: list[str]


def _restore_outputs(session: Session, outputs: list[dict]) -> None:
    """Write each output's pointer and check its data out, as ``cas add`` left them (pointer
    staged, data Git-ignored). A pointer it replaced is put back if the checkout fails."""
    repo = session.repo
    for out in outputs:
        target = repo.target(out["path"], repo.root)
        path = repo.abspath(target.pointer)
        before = path.read_bytes() if path.is_file() else None
        repo.write_pointer(target, pointer.parse(out["text"].encode("ascii"), out["pointer"]))
        where = [str(repo.root / target.pointer)]  # absolute: cas run may start in a subfolder
        try:
            try:
                repo.checkout(where)
            except ObjectMissingError:
                if remote_config.default_name(repo) is None:
                    raise
                from cas.ops import transfer

                transfer.fetch(repo, where)
                repo.checkout(where)
        except BaseException:
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)
            raise
        with repo.lock():
            repo.git.stage([target.pointer, repo.ignore(target)])


def try_reuse(session: Session) -> ReuseHit | None:
    """Restore a matching run's outputs and record the hit; None when there is none."""
    repo, record = session.repo, session.record
    catalog = open_synced(session.catalog_repo)
    try:
        candidates = catalog.successful(record["fingerprint"]["inputs"])
    finally:
        catalog.close()
    for source in candidates:
        old = rec.get(repo.local, source)
        if sorted(old["out"]) != sorted(record["out"]):
            continue
        try:
            _restore_outputs(session, old["outputs"])
        except ObjectMissingError:
            continue  # its outputs are gone from every store: try an older one, or run
        except CasError as err:
            record.update(status="failed", error=str(err), exit_code=None)
            session._commit(err)
        record.update(
            status="reused",
            reused=source,
            exit_code=0,
            outputs=old["outputs"],
            metrics=old["metrics"],
            series=old.get("series", {}),
            ended=record["started"],
            duration=0.0,
        )
        with contextlib.suppress(KeyError):
            record["env"]["runtime"] = old["env"]["runtime"]
        run_id = session._commit()
        return ReuseHit(source, run_id, [o["path"] for o in old["outputs"]])
    return None
