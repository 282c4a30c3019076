"""cas: content-addressed, Git-integrated data versioning for machine learning.

Git pins the code; cas pins the data. The public Python API is :class:`cas.repo.Repo`.
"""

__version__ = "0.1.0"
