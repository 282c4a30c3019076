"""What Python a run used: version, implementation and installed distributions.

Standard library only and no cas import: ``cas run`` runs this file as a script in the command's
own interpreter (another virtual environment) when that is not cas's, and imports it otherwise.
"""

import json
import os
import platform
import sys


def distributions(paths):
    """``name==version`` of every distribution installed on ``paths`` (a ``sys.path``), from the
    ``*.dist-info`` / ``*.egg-info`` folder names: ~1 ms, where importlib.metadata reads every
    METADATA file."""
    found = set()
    for entry in paths:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            for suffix in (".dist-info", ".egg-info"):
                if name.endswith(suffix):
                    dist, _, version = name[: -len(suffix)].partition("-")
                    if version:
                        found.add(dist.lower().replace("_", "-") + "==" + version.split("-py")[0])
    return sorted(found)


def describe():
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "packages": distributions(sys.path),
    }


if __name__ == "__main__":
    print(json.dumps(describe()))
