"""imageio's decoding rule: the EXIF orientation is applied whatever the flags, as viewers and basicsr's reads do."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from s2former_plugin import imageio


def _jpeg_with_orientation(img: np.ndarray, orientation: int, order: str = 'MM') -> bytes:
    data = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    end = '>' if order == 'MM' else '<'
    ifd = (
        struct.pack(end + 'H', 1) + struct.pack(end + 'HHIHH', 0x0112, 3, 1, orientation, 0) + struct.pack(end + 'I', 0)
    )
    tiff = order.encode() + struct.pack(end + 'HI', 42, 8) + ifd
    app1 = b'Exif\x00\x00' + tiff
    return data[:2] + b'\xff\xe1' + struct.pack('>H', len(app1) + 2) + app1 + data[2:]


@pytest.mark.parametrize('order', ['MM', 'II'])
@pytest.mark.parametrize('orientation', range(1, 9))
def test_every_reader_sees_the_orientation_basicsr_and_viewers_see(orientation, order):
    img = np.zeros((24, 40, 3), np.uint8)
    img[:8, :12] = (255, 255, 255)  # a white corner shows every turn and mirror
    img[16:, 30:] = (0, 0, 255)
    data = _jpeg_with_orientation(img, orientation, order)
    assert imageio.exif_orientation(data) == orientation
    basicsr_view = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # basicsr's imfrombytes('color')
    ours = imageio.decode(data, 'x.jpg')  # IMREAD_UNCHANGED: infer, report, the benchmark
    np.testing.assert_array_equal(ours, basicsr_view)
    assert (ours.shape[:2] == (24, 40)) == (orientation <= 4)


def test_images_without_exif_are_untouched(tmp_path):
    img = np.arange(24 * 40 * 3, dtype=np.uint8).reshape(24, 40, 3)
    path = tmp_path / 'a.png'
    cv2.imwrite(str(path), img)
    np.testing.assert_array_equal(imageio.read(str(path)), img)
    assert imageio.exif_orientation(b'not an image') == 1


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_a_png_exif_orientation_is_applied_as_opencv_applies_it(orientation):
    import zlib

    img = np.zeros((24, 40, 3), np.uint8)
    img[:8, :12] = 255
    png = cv2.imencode('.png', img)[1].tobytes()
    ifd = struct.pack('>H', 1) + struct.pack('>HHIHH', 0x0112, 3, 1, orientation, 0) + struct.pack('>I', 0)
    tiff = b'MM' + struct.pack('>HI', 42, 8) + ifd
    chunk = struct.pack('>I', len(tiff)) + b'eXIf' + tiff + struct.pack('>I', zlib.crc32(b'eXIf' + tiff))
    data = png[:33] + chunk + png[33:]  # after the signature and IHDR
    assert imageio.exif_orientation(data) == orientation
    basicsr_view = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(imageio.decode(data, 'x.png'), basicsr_view)
