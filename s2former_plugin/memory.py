"""Will a whole image fit in the CPU's memory? Checked before the forward, not found out in the allocator.

A CPU allocation that does not fit either raises after a long wait or, with Linux's overcommit, gets the process
killed, naming neither the image nor ``--tile``. ``infer --tile 0`` therefore estimates the forward's peak from the
image size and refuses (by name, with the tile to use) an image that would not fit in the memory available now.
"""

from __future__ import annotations

__all__ = ['BYTES_PER_PIXEL', 'available_bytes', 'whole_image_problem']

#: Peak memory of a float32 inference forward per input pixel (about 2.5-3.0 kB for both presets at 256² and 512²,
#: measured as the growth of the process's peak RSS; the larger figure, rounded up).
BYTES_PER_PIXEL = 3072


def available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (``None`` where there is no such file)."""
    try:
        with open('/proc/meminfo', encoding='ascii') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def whole_image_problem(height: int, width: int, available: int | None = None) -> str | None:
    """Why a whole ``height x width`` image cannot be run on the CPU here (``None``: it fits or cannot be told)."""
    available = available_bytes() if available is None else available
    need = BYTES_PER_PIXEL * height * width
    if available is None or need <= 0.9 * available:
        return None
    tile = 512 if BYTES_PER_PIXEL * 512 * 512 <= 0.9 * available else 256
    return (
        f'a whole {width}x{height} image needs about {need / 2**30:.1f} GiB on the CPU, '
        f'{available / 2**30:.1f} GiB are available: use --tile {tile}'
    )
