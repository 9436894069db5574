"""The one image reader and writer (``s2former_plugin.imageio``) on bad files: damaged and truncated images refused
by name in one line, sound ones of every kind read pixel-identical to ``cv2.imread``, a missing file or a folder
named, a full disk leaving no partial file.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import PIL.Image
import pytest
from helpers import DAMAGED_IMAGES, smooth_image

from s2former_plugin import imageio


@pytest.mark.parametrize('case', list(DAMAGED_IMAGES))
def test_reader_refuses_damaged_image_naming_it(tmp_path, case):
    make, reason = DAMAGED_IMAGES[case]
    path = tmp_path / ('bad.jpg' if case.startswith('jpeg') else 'bad.png')
    path.write_bytes(make())
    with pytest.raises(imageio.ImageError) as info:
        imageio.read(str(path))
    assert str(info.value).startswith(f'{path}: ') and reason in str(info.value)
    assert '\n' not in str(info.value)


GOOD = {
    'png-8bit': lambda p: cv2.imwrite(p + '.png', smooth_image()),
    'png-16bit': lambda p: cv2.imwrite(p + '.png', smooth_image().astype(np.uint16) * 257),
    'png-gray': lambda p: cv2.imwrite(p + '.png', smooth_image()[..., 0]),
    'png-alpha': lambda p: cv2.imwrite(p + '.png', np.dstack([smooth_image(), smooth_image()[..., :1]])),
    'png-interlaced': lambda p: PIL.Image.fromarray(smooth_image()).save(p + '.png', interlace=1),
    'jpeg-baseline': lambda p: cv2.imwrite(p + '.jpg', smooth_image()),
    'jpeg-progressive': lambda p: cv2.imwrite(p + '.jpg', smooth_image(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    'jpeg-restart-markers': lambda p: cv2.imwrite(p + '.jpg', smooth_image(), [cv2.IMWRITE_JPEG_RST_INTERVAL, 1]),
    'jpeg-pillow-exif': lambda p: PIL.Image.fromarray(smooth_image()).save(p + '.jpg', exif=b'Exif'),
    'tiff-float': lambda p: cv2.imwrite(p + '.tiff', smooth_image().astype(np.float32) / 255),
    'bmp': lambda p: cv2.imwrite(p + '.bmp', smooth_image()),
    'webp': lambda p: cv2.imwrite(p + '.webp', smooth_image()),
}


@pytest.mark.parametrize('case', list(GOOD))
def test_reader_accepts_sound_images_unchanged(tmp_path, case):
    stem = str(tmp_path / 'ok')
    GOOD[case](stem)
    (path,) = [str(tmp_path / n) for n in os.listdir(tmp_path)]
    got = imageio.read(path)
    ref = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert got.dtype == ref.dtype and np.array_equal(got, ref)


def test_reader_names_missing_file_and_folder(tmp_path):
    with pytest.raises(imageio.ImageError, match=r'nope\.png: cannot read \(No such file'):
        imageio.read(str(tmp_path / 'nope.png'))
    with pytest.raises(imageio.ImageError, match='cannot read'):
        imageio.read(str(tmp_path))


def test_write_on_a_full_disk_says_disk_full(tmp_path, monkeypatch):
    import errno

    real_open = open

    class Full:  # a real file that fills up after 10 bytes
        def __init__(self, path, mode):
            self.f = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(imageio, 'open', Full, raising=False)
    target = tmp_path / 'out.png'
    target.write_bytes(b'earlier')
    with pytest.raises(OSError, match=r'out\.png: cannot write \(disk full\)'):
        imageio.write(str(target), smooth_image())
    assert os.listdir(tmp_path) == ['out.png'] and target.read_bytes() == b'earlier'  # no partial file
