"""The command-line shell over :mod:`cas.repo`; the only package that imports typer and rich."""
