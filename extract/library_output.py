"""Keeping the backbone libraries' own chatter (load reports, progress bars) out of the user's output.

transformers prints a LOAD REPORT table and a "Loading weights" progress bar for every model it
loads; huggingface_hub draws its own bars. Our loaders check what matters (missing tensors are
refused with their names), so these lines are noise unless the user asks for them (`--verbose`).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from transformers.utils import logging as transformers_logging


@contextmanager
def library_output(verbose: bool) -> Iterator[None]:
    """Within the block, transformers logs only errors and neither library draws progress bars, unless `verbose`."""
    if verbose:
        yield
        return
    verbosity = transformers_logging.get_verbosity()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    hub_bars_disabled = are_progress_bars_disabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    disable_progress_bars()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if transformers_bars:
            transformers_logging.enable_progress_bar()
        if not hub_bars_disabled:
            enable_progress_bars()
