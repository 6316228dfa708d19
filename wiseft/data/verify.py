"""Up-front image checks: find corrupt or truncated files before any model is built.

Off by default (``data.verify_images=off``): decoding every image of a large dataset takes minutes, and an
unreadable file still fails, naming the file, the moment it is loaded. ``error`` decodes everything first and
stops at the first bad file; ``skip`` drops bad files and reports how many.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from wiseft.errors import DataError

log = logging.getLogger(__name__)

SKIP_HINT = "set data.verify_images=skip to leave unreadable files out"

Sample = tuple[str, int]


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be decoded, or ``None`` if it can.

    JPEGs are decoded at reduced scale (``draft``), which still reads the whole compressed stream, so truncation
    is caught at a fraction of the cost of a full decode.
    """
    try:
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))
            img.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return " ".join(str(err).split()) or type(err).__name__
    return None


def verify_samples(
    samples: Sequence[Sample], mode: str, where: str, workers: int | None = None
) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Decode every sample's image; raise on the first bad one or leave bad ones out.

    Args:
        samples: ``(path, label)`` pairs.
        mode: ``error`` or ``skip`` (``off`` returns ``samples`` unchecked).
        where: Config key of the dataset, for messages.
        workers: Decoding threads (PIL releases the GIL while decoding); default: the CPU count, at most 16.

    Returns:
        The readable samples, in order, and ``(path, reason)`` for each file left out.

    Raises:
        DataError: In ``error`` mode, naming the first unreadable file in sample order.
    """
    if mode == "off":
        return list(samples), []
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(image_problem, [path for path, _ in samples]))
    bad = [(path, problem) for (path, _), problem in zip(samples, problems, strict=True) if problem is not None]
    if bad and mode == "error":
        path, problem = bad[0]
        raise DataError(f"{where}: cannot read image '{path}': {problem} ({len(bad)} unreadable in this dataset; "
                        f"{SKIP_HINT})")
    kept = [sample for sample, problem in zip(samples, problems, strict=True) if problem is None]
    if bad:
        log.warning("%s: skipped %d unreadable image(s) of %d, first '%s': %s", where, len(bad), len(samples),
                    bad[0][0], bad[0][1])
    if not kept:
        raise DataError(f"{where}: none of its {len(samples)} images can be read (first: '{bad[0][0]}')")
    return kept, bad
