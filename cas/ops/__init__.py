"""One operation per module. Each takes a :class:`cas.repo.Repo` and returns plain data."""
