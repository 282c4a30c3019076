"""Repository configuration: ``.cas/config`` (committed) overlaid by ``.cas/config.local``
(git-ignored, for credentials and machine-specific paths). INI syntax, as git-config and DVC use.

Keys: ``core.store`` (path of the local store, default ``.cas/store``; point several clones at one
folder to share a cache), ``core.fsync`` (true: packs are flushed to disk before they are named,
so they survive power loss; default false, like ``cp`` and DVC: a kill -9 is safe either way),
``core.executor`` (where ``cas add`` and ``cas manifest create|append`` hash: a Dask scheduler
address ``tcp://host:8786``, ``processes[:N]`` or ``local``; default this process).
"""

from __future__ import annotations

import configparser
from pathlib import Path

from cas.errors import UsageError

CONFIG = "config"
LOCAL_CONFIG = "config.local"


class Config:
    def __init__(self, cas_dir: Path) -> None:
        self.cas_dir = cas_dir
        self.parser = configparser.ConfigParser(interpolation=None)
        for name in (CONFIG, LOCAL_CONFIG):
            path = cas_dir / name
            try:
                self.parser.read(path, encoding="utf-8")
            except configparser.Error as err:
                # Only the first line, and no chained exception (shown by --verbose): the
                # others quote the offending line, which may hold a secret.
                first = str(err).splitlines()[0]
                raise UsageError(f"{path} is not valid config: {first}; fix or remove it") from None
            except UnicodeDecodeError as err:  # the committed file may come from anyone
                raise UsageError(
                    f"{path} is not UTF-8 text (byte {err.start}); fix or remove it"
                ) from None
        for sect in self.parser.sections():
            for key, value in self.parser.items(sect):
                if "\x00" in f"{sect}{key}{value}":  # would crash every path operation
                    raise UsageError(
                        f"section {sect!r} of .cas/config or .cas/config.local holds a NUL "
                        "character; fix or remove it"
                    )

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        return self.parser.get(section, key, fallback=default)

    def get_bool(self, section: str, key: str, default: bool) -> bool:
        try:
            return self.parser.getboolean(section, key, fallback=default)
        except ValueError as err:
            raise UsageError(f"{section}.{key} must be true or false in .cas/config") from err


def write_default(cas_dir: Path) -> None:
    (cas_dir / CONFIG).write_text("[core]\n", encoding="utf-8")
