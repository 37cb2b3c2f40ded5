"""stdout's end: a write error raised (and reported once) while the command can still say so, not at exit.

Stdlib only: the `status` fast path and `--help` import it.
"""

from __future__ import annotations

import errno
import os
import sys

# stdout cannot take the output: a full disk (`> /dev/full`), a quota, a file too large, a gone terminal.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def finish_output() -> None:
    """Flush stdout now, so that a write error is raised here (and reported) rather than at exit, where Python
    prints a traceback-like warning and exits 120; after an error stdout goes to /dev/null, as nothing more
    can be written to it."""
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise
