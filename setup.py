"""Packaging for s2former_plugin.

Besides the package, the wheel puts ``s2former_plugin.pth`` into site-packages: a one-line startup hook that lets
``python -m basicsr.train`` find the plugin without any import in user code. Regular wheels get it through
``build_py``; editable installs (``pip install -e .``) through ``editable_wheel``, which otherwise installs no
``.pth`` of ours; the sdist carries it (``sdist``) so that a wheel built from the sdist has it too.

Build and check (``make dist``): ``python -m build`` (sdist and wheel into ``dist/``), ``twine check dist/*``. The
version lives in one place, ``s2former_plugin/__init__.py``.
"""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel
from setuptools.command.sdist import sdist

HOOK = 's2former_plugin.pth'
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(os.path.join(HERE, HOOK), os.path.join(self.build_lib, HOOK))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK)]


class EditableWheelWithHook(editable_wheel):
    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        shutil.copy(os.path.join(HERE, HOOK), os.path.join(unpacked_wheel, HOOK))
        return result


class SdistWithHook(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        # Not a module, so the file list leaves it out; build_py needs it in the unpacked sdist.
        self.copy_file(os.path.join(HERE, HOOK), os.path.join(base_dir, HOOK))


def read_version():
    with open(os.path.join(HERE, 's2former_plugin', '__init__.py'), encoding='utf-8') as f:
        for line in f:
            if line.startswith('__version__'):
                return line.split('=')[1].strip().strip('\'"')
    raise RuntimeError('__version__ not found')


setup(
    name='s2former_plugin',
    version=read_version(),
    description='UDR-S2Former (ICCV 2023) deraining as a BasicSR plugin: any input size, faster, tested.',
    long_description=open(os.path.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    license_files=['LICENSE'],
    # `X | Y` in isinstance() needs 3.10; tested on 3.11.
    python_requires='>=3.10',
    classifiers=[
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Operating System :: OS Independent',
        'Topic :: Scientific/Engineering :: Image Processing',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    packages=find_packages(include=['s2former_plugin', 's2former_plugin.*']),
    include_package_data=True,
    install_requires=[
        'torch>=2.1',
        'torchvision',
        'basicsr==1.4.2',
        'mmengine',
        'lmdb',
        'opencv-python',
        'pyiqa',
        'numpy',
        'pyyaml',
        'tqdm',
        'scikit-image',
        'matplotlib',
        'safetensors',
    ],
    extras_require={
        # Pinned: a newer ruff may lint or format differently, and make test must mean the same everywhere.
        # build and twine: `make dist` (python -m build, twine check) and tests/test_packaging.py.
        'dev': ['pytest==9.2.0', 'ruff==0.17.6', 'build==1.6.1', 'twine==7.0.0'],
        # ONNX export and onnxruntime inference (s2former_plugin.export, infer --weights net.onnx)
        'export': ['onnx==1.23.2', 'onnxruntime==1.31.1'],
        # Restormer, MPRNet (spandrel-extra-arches) and NAFNet (spandrel) (s2former_plugin/archs/*_arch.py)
        'rivals': ['spandrel==0.4.2', 'spandrel-extra-arches==0.2.0'],
    },
    cmdclass={'build_py': BuildPyWithHook, 'editable_wheel': EditableWheelWithHook, 'sdist': SdistWithHook},
)
