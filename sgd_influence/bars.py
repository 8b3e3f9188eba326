"""Progress bars, on a terminal only.

A bar redraws its line with carriage returns: in a log file or a pipe (stderr redirected,
a batch job's log) its fragments would share the lines of the log records. A bar is
drawn when stderr is a terminal and left out otherwise (tqdm's ``disable=None``).
"""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(iterable=None, *, shown: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal when ``shown``; else a bar that draws nothing."""
    return tqdm(iterable, disable=None if shown else True, **kwargs)
