"""The one image reader and writer: every command reads images here, so damaged files are refused everywhere.

OpenCV decodes what it can: a truncated JPEG or PNG may come back with grey or black rows, and a JPEG whose entropy
data is damaged decodes to garbage while libjpeg only prints ``Corrupt JPEG data`` to stderr. Such an image would be
derained, scored or stored as if it were fine. :func:`decode` therefore

- checks the container first: a PNG must have intact chunk CRCs and its ``IEND`` chunk; a JPEG must end in its EOI
  marker, and its entropy-coded data may hold no marker but stuffed ``FF 00`` bytes and restart markers in sequence
  (a damaged byte run usually breaks one of these);
- decodes with OpenCV while catching libjpeg/libpng warnings written to stderr, and refuses the image if there are any.

Both raise :class:`ImageError`, whose message names the file and the reason in one line.

One decoding rule for every command: an EXIF orientation tag is applied whatever the flags (as image viewers do, and
as OpenCV's ``IMREAD_COLOR`` does, which basicsr uses to read LMDB and folder datasets), so ``infer``, ``report``,
``create_lmdb`` and training see the same pixels in the same orientation; ``cv2.IMREAD_UNCHANGED`` alone would leave
a camera photo on its side.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import sys
import tempfile
import threading
import zlib

import cv2
import numpy as np

from .errors import S2FormerError

__all__ = [
    'IMAGE_EXTENSIONS',
    'ImageError',
    'check_bytes',
    'decode',
    'list_images',
    'natural_key',
    'read',
    'read_bytes',
    'write',
]

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# Markers without a length field: SOI, EOI, TEM and the restart markers.
_STANDALONE = {0xD8, 0xD9, 0x01} | set(range(0xD0, 0xD8))
_stderr_lock = threading.Lock()


def natural_key(text: str) -> list:
    """Sort key that orders ``norain-2`` before ``norain-10``."""
    return [(0, int(t), '') if t.isdigit() else (1, 0, t.lower()) for t in re.split(r'(\d+)', text)]


def list_images(folder: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
    """Paths of the image files directly in ``folder`` (:data:`IMAGE_EXTENSIONS`, not hidden), natural order.

    The one folder scanner of the commands (infer, report, the benchmarks). A broken link is listed, not dropped:
    reading it fails with a line naming it, so a command says what it skipped.

    Args:
        folder: The folder scanned.
        extensions: Lower-case extensions listed (other files beside images, e.g. raw uncertainty maps).
    """
    names = sorted((n for n in os.listdir(folder) if not n.startswith('.')), key=lambda n: (natural_key(n), n))
    paths = [os.path.join(folder, n) for n in names if os.path.splitext(n)[1].lower() in extensions]
    return [p for p in paths if os.path.isfile(p) or (os.path.islink(p) and not os.path.exists(p))]


class ImageError(S2FormerError, ValueError):
    """A file that is not a complete, undamaged image; the message names the file and the reason."""


def _png_problem(data: bytes) -> str | None:
    view = memoryview(data)
    pos, has_idat, seen_iend = 8, False, False
    while pos < len(data):
        if pos + 12 > len(data):
            return 'truncated PNG (chunk cut short)'
        (length,) = struct.unpack('>I', data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return f'truncated PNG ({kind.decode("latin-1")} chunk cut short)'
        if zlib.crc32(view[pos + 8 : end - 4], zlib.crc32(kind)) != struct.unpack('>I', data[end - 4 : end])[0]:
            return f'damaged PNG (CRC mismatch in {kind.decode("latin-1")!r} chunk at byte {pos})'
        has_idat |= kind == b'IDAT'
        pos = end
        if kind == b'IEND':
            seen_iend = True
            break
    if not seen_iend:
        return 'truncated PNG (no IEND chunk)'
    if not has_idat:
        return 'damaged PNG (no image data)'
    return None  # image data that ends early is reported by libpng ('Not enough image data')


def _jpeg_problem(data: bytes) -> str | None:
    if not data.rstrip(b'\x00').endswith(b'\xff\xd9'):
        return 'truncated JPEG (no end-of-image marker)'
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            return f'damaged JPEG (expected a marker at byte {pos})'
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return 'truncated JPEG'
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return None
        if marker in _STANDALONE:
            continue
        if pos + 2 > n:
            return 'truncated JPEG'
        (length,) = struct.unpack('>H', data[pos : pos + 2])
        if length < 2 or pos + length > n:
            return f'damaged JPEG (segment 0xff{marker:02x} at byte {pos - 2} has a bad length)'
        pos += length
        if marker != 0xDA:  # SOS: entropy-coded data follows until the next marker
            continue
        expected_rst = 0
        while True:
            ff = data.find(b'\xff', pos)
            if ff < 0 or ff + 1 >= n:
                return 'truncated JPEG (scan data ends without a marker)'
            nxt = data[ff + 1]
            if nxt == 0x00 or nxt == 0xFF:  # stuffed byte, or fill before a marker
                pos = ff + 1 if nxt == 0xFF else ff + 2
                continue
            if 0xD0 <= nxt <= 0xD7:
                if nxt - 0xD0 != expected_rst:
                    return f'damaged JPEG (restart marker out of sequence at byte {ff})'
                expected_rst = (expected_rst + 1) % 8
                pos = ff + 2
                continue
            if nxt in (0xD9, 0xDA, 0xC4, 0xDB, 0xDD) or 0xE0 <= nxt <= 0xEF or nxt == 0xFE:
                pos = ff  # a real marker: EOI, next scan (progressive), tables or an application segment
                break
            return f'damaged JPEG (invalid marker 0xff{nxt:02x} inside scan data at byte {ff})'
    return 'truncated JPEG (no end-of-image marker)'


def check_bytes(data: bytes, name: str) -> None:
    """Refuse an empty, truncated or structurally damaged PNG/JPEG (other formats: only emptiness is checked here).

    Args:
        data: The file's bytes.
        name: The file name for the message.

    Raises:
        ImageError: ``'<name>: <reason>'``.
    """
    if not data:
        raise ImageError(f'{name}: empty file (0 bytes)')
    problem = None
    if data[:8] == PNG_SIGNATURE:
        problem = _png_problem(data)
    elif data[:3] == b'\xff\xd8\xff':
        problem = _jpeg_problem(data)
    if problem:
        raise ImageError(f'{name}: {problem}')


_sink: dict[int, object] = {}  # one capture file per process (pid: a forked worker must not share the parent's)


def _decode_watching_stderr(buf: np.ndarray, flags: int) -> tuple[np.ndarray | None, str]:
    """``cv2.imdecode`` with file descriptor 2 redirected: libjpeg and libpng report damage only there."""
    with _stderr_lock:
        sink = _sink.get(os.getpid())
        if sink is None:
            sink = _sink[os.getpid()] = tempfile.TemporaryFile()
        sink.seek(0)
        sink.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            img = cv2.imdecode(buf, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        said = sink.read().decode('utf-8', 'replace')
    return img, said


def decode(data: bytes, name: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode an image file's bytes, refusing damaged or truncated files.

    Args:
        data: The file's bytes.
        name: The file name for messages.
        flags: ``cv2.IMREAD_*`` flags (``IMREAD_COLOR`` gives 8-bit BGR exactly as basicsr's ``imfrombytes``).

    Returns:
        The image as OpenCV returns it.

    Raises:
        ImageError: ``'<name>: <reason>'`` for an empty, truncated, damaged or undecodable file.
    """
    check_bytes(data, name)
    img, said = _decode_watching_stderr(np.frombuffer(data, np.uint8), flags)
    warning = next((line.strip() for line in said.splitlines() if line.strip()), '')
    if warning:
        if img is None or 'corrupt' in warning.lower() or 'error' in warning.lower() or 'premature' in warning.lower():
            raise ImageError(f'{name}: damaged image (decoder: {warning})')
        sys.stderr.write(said)  # anything else the decoder said is passed on, not swallowed
    if img is None:
        raise ImageError(f'{name}: cannot read (not a decodable image)')
    if img.size == 0:
        raise ImageError(f'{name}: image has no pixels')
    if flags == cv2.IMREAD_UNCHANGED or flags & cv2.IMREAD_IGNORE_ORIENTATION:  # OpenCV left the EXIF tag unapplied
        img = _orient(img, exif_orientation(data))
    return img


def _tiff_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of IFD0 in an EXIF/TIFF block; 1 when there is none or it is unreadable."""
    if len(tiff) < 8 or tiff[:2] not in (b'II', b'MM'):
        return 1
    end = '<' if tiff[:2] == b'II' else '>'
    try:
        (ifd,) = struct.unpack_from(end + 'I', tiff, 4)
        (count,) = struct.unpack_from(end + 'H', tiff, ifd)
        for i in range(count):
            tag, kind, _, value = struct.unpack_from(end + 'HHI4s', tiff, ifd + 2 + 12 * i)
            if tag == 0x0112 and kind == 3:  # SHORT: the value sits in the first two bytes of the field
                (orientation,) = struct.unpack_from(end + 'H', value)
                return orientation if 1 <= orientation <= 8 else 1
    except struct.error:
        return 1
    return 1


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8; 1 = as stored) of a JPEG's APP1 segment or a PNG's ``eXIf`` chunk (the two
    OpenCV applies)."""
    if data[:8] == PNG_SIGNATURE:
        pos = 8
        while pos + 8 <= len(data):
            (length,) = struct.unpack_from('>I', data, pos)
            kind = data[pos + 4 : pos + 8]
            if kind == b'eXIf':
                return _tiff_orientation(data[pos + 8 : pos + 8 + length])
            if kind in (b'IDAT', b'IEND'):
                break
            pos += 12 + length
        return 1
    if data[:2] != b'\xff\xd8':
        return 1
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xDA, 0xD9):  # start of scan / end: no metadata after this
            break
        (length,) = struct.unpack_from('>H', data, pos + 2)
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b'Exif\x00\x00':
            return _tiff_orientation(data[pos + 10 : pos + 2 + length])
        pos += 2 + length
    return 1


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` turned as EXIF ``orientation`` says (2-8: mirrored and/or rotated)."""
    if orientation in (5, 6, 7, 8):
        img = cv2.transpose(img)
    flip = {2: 1, 3: -1, 4: 0, 5: None, 6: 1, 7: -1, 8: 0}.get(orientation)
    return img if flip is None else cv2.flip(img, flip)


def read_bytes(path: str) -> bytes:
    """The bytes of ``path``.

    Raises:
        ImageError: Missing, unreadable or a folder (the message names it).
    """
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as e:
        if os.path.islink(path) and not os.path.exists(path):
            raise ImageError(f'{path}: broken link (to {os.readlink(path)})') from None
        raise ImageError(f'{path}: cannot read ({e.strerror})') from None


def read(path: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Read and decode ``path`` with :func:`decode` (works for any path, unlike ``cv2.imread``).

    Raises:
        ImageError: ``'<path>: <reason>'``.
    """
    return decode(read_bytes(path), path, flags)


def write(path: str, img: np.ndarray, params: list[int] | None = None) -> None:
    """Encode ``img`` by ``path``'s extension and write it atomically (a failed write leaves no partial file).

    Raises:
        OSError: The file cannot be encoded or written (the message names it; a full disk says ``disk full``).
    """
    ext = os.path.splitext(path)[1] or '.png'
    ok, buf = cv2.imencode(ext, img, params or [])
    if not ok:
        raise OSError(f'{path}: cannot encode the image as {ext}')
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        reason = 'disk full' if e.errno == errno.ENOSPC else e.strerror
        raise OSError(f'{path}: cannot write ({reason})') from None
