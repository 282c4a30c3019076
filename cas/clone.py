"""Copy-on-write clones of file ranges (reflink), where the filesystem has them.

On XFS (``reflink=1``, the default since xfsprogs 5.1), btrfs, bcachefs and OCFS2, Linux's
``FICLONERANGE`` makes a range of one file share the blocks of a range of another: no data is
copied, no space is used until either side is written, and writing one side never changes the
other (so, unlike a hardlink or a symlink into the store, a user editing a checked-out file cannot
corrupt the store). Ranges must start on a filesystem block; ``BLOCK`` is the block size cas
aligns to. Elsewhere (ext4, tmpfs, network filesystems, other systems) the call fails and callers
copy instead.
"""

from __future__ import annotations

import errno
import struct
import sys

BLOCK = 4096  # the block size of XFS, btrfs and ext4 as made by default

_FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range)
_RANGE = struct.Struct("=qQQQ")  # src_fd, src_offset, src_length, dest_offset
# What a filesystem, or a pair of files, that cannot clone answers: no support (EOPNOTSUPP,
# ENOTTY), two filesystems (EXDEV), a block size other than BLOCK (EINVAL).
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


def clone_range(src_fd: int, src_offset: int, length: int, dst_fd: int, dst_offset: int) -> bool:
    """Make ``length`` bytes of ``dst_fd`` at ``dst_offset`` share the blocks of ``src_fd`` at
    ``src_offset`` (all three multiples of BLOCK). False where cloning is not possible, so the
    caller copies; other failures (a full disk) raise ``OSError``."""
    if sys.platform != "linux":
        return False
    import fcntl  # POSIX only

    try:
        fcntl.ioctl(dst_fd, _FICLONERANGE, _RANGE.pack(src_fd, src_offset, length, dst_offset))
    except OSError as err:
        if err.errno in _UNSUPPORTED:
            return False
        raise
    return True
