"""What a dataset-to-LMDB conversion tells its caller: its counts and summary lines, and its one error type."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import S2FormerError

__all__ = ['ConvertError', 'ConvertReport']


class ConvertError(S2FormerError, RuntimeError):
    """A bad input or option; the message is one line naming the file or option."""


@dataclass
class ConvertReport:
    """Counts of a conversion (also written to ``OUT/create_lmdb.json``)."""

    output: str
    pairs_found: int = 0
    written: int = 0
    resumed: int = 0
    skipped: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    lq_bytes: int = 0
    gt_bytes: int = 0
    verified: int | None = None
    verify_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        total = self.lq_bytes + self.gt_bytes
        lines = [
            f'pairs found: {self.pairs_found}, written: {self.written} '
            f'({self.resumed} from an earlier run), skipped: {len(self.skipped)}, unmatched files: '
            f'{len(self.unmatched)}',
            f'PNG bytes: lq {self.lq_bytes:,} + gt {self.gt_bytes:,} = {total:,} ({total / 2**20:.1f} MiB) '
            f'in {self.seconds:.1f} s',
            f'output: {os.path.join(self.output, "lq.lmdb")} and {os.path.join(self.output, "gt.lmdb")}',
        ]
        if self.verified is not None:
            lines.append(f'verified: {self.verified} pairs, {len(self.verify_errors)} differ from their source')
        return '\n'.join(lines)
