"""Convert a deraining dataset into BasicSR LMDBs: ``OUT/lq.lmdb`` and ``OUT/gt.lmdb``.

Examples (see docs/data.md)::

    python datasets_prep/create_lmdb.py --layout rainds --input RainDS/RainDS_syn --split train --subset all \\
        --output datasets/RainDS_syn_train
    python datasets_prep/create_lmdb.py --layout rain200 --input Rain200H --split train --output datasets/Rain200H_train
    python datasets_prep/create_lmdb.py --layout agan --input Raindrop --split test_a --output datasets/Raindrop_test_a

The logic lives in :mod:`s2former_plugin.data.lmdb_convert`; this file only calls it.
"""

import sys

from s2former_plugin.data.lmdb_convert import main

if __name__ == '__main__':
    sys.exit(main(prog='create_lmdb.py'))
