"""The ``litwatch`` command line: a thin shell over the library.

Each command builds what it needs from the validated settings, calls one library function,
and turns domain errors into one clear line and an exit code: 0 success, 1 a failure of the
work itself (a source failed, a message was refused), 2 usage or configuration errors.
"""

from __future__ import annotations

from crawler.cli.app import main

__all__ = ["main"]
