"""The feature folders of ``muva extract``: writer, reader and :class:`FeatureSet`.

The format and its reader live in :mod:`muva.utils.featurefiles` (low in the layers,
so that :mod:`muva.evaluation` reads the same folders); this module is their public
name on the inference side.  A set saved as a folder loads back row for row:

    >>> import tempfile
    >>> import numpy as np
    >>> fs = FeatureSet(np.eye(3, dtype=np.float32), ["q/a.jpg", "g/b.jpg", "g/c.jpg"], pids=[1, 1, 2],
    ...                 splits=["query", "gallery", "gallery"])
    >>> tmp = tempfile.TemporaryDirectory()
    >>> again = load_features(fs.save(tmp.name + "/feats"))
    >>> len(again), again.names, again.split("gallery").pids.tolist()
    (3, ['a.jpg', 'b.jpg', 'c.jpg'], [1, 2])
    >>> tmp.cleanup()
"""

from muva.utils.featurefiles import (
    COLUMNS,
    FAILED,
    FORMAT,
    MANIFEST,
    METADATA,
    VERSION,
    FeatureFileError,
    FeatureSet,
    FeatureWriter,
    iter_feature_shards,
    load_features,
    read_manifest,
    read_safetensors,
)

__all__ = [
    "COLUMNS",
    "FAILED",
    "FORMAT",
    "MANIFEST",
    "METADATA",
    "VERSION",
    "FeatureFileError",
    "FeatureSet",
    "FeatureWriter",
    "iter_feature_shards",
    "load_features",
    "read_manifest",
    "read_safetensors",
]
