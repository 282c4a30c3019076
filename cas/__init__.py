"""cas: content-addressed, Git-integrated data versioning for machine learning.

Git pins the code; cas pins the data. The public Python API is :class:`cas.repo.Repo`.

Inside a command started by ``cas run`` (no-ops outside one; see docs/runs.md):
``cas.seed_everything``, ``cas.log_metric``, ``cas.log_metrics``, ``cas.current_run`` and, in a
notebook, ``with cas.start_run(name=...)``. They use the standard library only, so
``import cas`` stays cheap.
"""

from cas.runs.api import current_run, log_metric, log_metrics, seed_everything, start_run

__version__ = "0.1.0"
__all__ = ["current_run", "log_metric", "log_metrics", "seed_everything", "start_run"]
