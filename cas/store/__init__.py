"""Stores: where immutable, key-addressed blobs live. They know nothing of hashes or Git.

A key is a relative POSIX path such as ``packs/ab/abcd....``. Every backend offers the same
contract (see :class:`cas.store.base.Store`): a put is atomic (readers see the whole blob or
nothing under its key), a blob never changes once written, and a missing key raises
``KeyError``.
"""

from cas.store.base import Store
from cas.store.local import LocalStore

__all__ = ["LocalStore", "Store"]
