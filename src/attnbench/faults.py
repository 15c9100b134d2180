"""Faults from outside attnbench, said in attnbench's own words: a full disk, an input deleted while
the run used it, Snakemake failing to record what a job made. Snakemake's own messages for these
("ensure write permissions", "filesystem latency") send a user the wrong way, and a failed metadata
record leaves the job's outputs behind as if they were made.

Imported by the Snakefile (the free-space check, terminal.stopped): nothing beyond what terminal
imports already.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from attnbench.formatting import clip

# Below this much free space a run is refused before it starts: Snakemake's locks, logs and metadata
# and attnbench's results need a few MiB, and a disk this full fails somewhere in the middle.
MIN_FREE_BYTES = 32 << 20
FOUND_WIDTH = 120  # of the log's line quoted beside the cause
METADATA = Path(".snakemake") / "metadata"

# (what Snakemake's log says, what attnbench says): the first that matches names the cause.
CAUSES = (
    (
        ("No space left on device", "Errno 28", "Disk quota exceeded"),
        "the disk is full ({found}): free space (df -h .), then run the same command again",
    ),
    (
        ("Missing files after", "MissingInputException", "Missing input files"),
        "a file the run needed was deleted while it ran ({found}): run the same command again; it makes "
        "the file again",
    ),
    (
        ("Error recording metadata",),
        "Snakemake could not record what a job made in .snakemake/metadata ({found}); that job's outputs "
        "were removed: run the same command again",
    ),
)


def free_space_problem(directory: str | Path = ".") -> str | None:
    """Why the run cannot start here for lack of space, or None."""
    free = shutil.disk_usage(directory).free
    if free >= MIN_FREE_BYTES:
        return None
    return (
        f"attnbench: the disk holding {Path(directory).resolve()} has {free / 2**20:.1f} MiB free, less than "
        f"the {MIN_FREE_BYTES >> 20} MiB a run needs: free space (df -h .), then run the same command again"
    )


def cause(log_text: str) -> str | None:
    """attnbench's line for the fault a Snakemake log shows, or None when it shows none of these."""
    for needles, said in CAUSES:
        for line in log_text.splitlines():
            if any(needle in line for needle in needles):
                return "attnbench: " + said.format(found=clip(line.strip(), FOUND_WIDTH))
    return None


def remove_unrecorded(workdir: str | Path = ".") -> list[Path]:
    """Remove each output whose metadata record is empty or unreadable (a job whose record failed, on a
    full disk), and that record: Snakemake would otherwise take the output as made. The outputs removed."""
    metadata = Path(workdir) / METADATA
    removed = []
    for record in sorted(metadata.rglob("*")) if metadata.is_dir() else []:
        if not record.is_file() or _readable(record):
            continue
        output = Path(workdir) / _recorded_path(record.relative_to(metadata))
        if output.is_file():
            output.unlink()
            removed.append(output)
        record.unlink()
    return removed


def _readable(record: Path) -> bool:
    try:
        return isinstance(json.loads(record.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def _recorded_path(relative: Path) -> str:
    """The output a record names: its file name, split into '@'-prefixed folders where too long
    (snakemake.persistence.file), is the output's path in URL-safe base64."""
    encoded = "".join(part.removeprefix("@") for part in relative.parts)
    return base64.urlsafe_b64decode(encoded.encode()).decode()
