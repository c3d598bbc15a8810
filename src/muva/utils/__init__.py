"""Small shared helpers, the lowest layer (imports no other muva package).

Progress bars, atomic file writes, lazy exports, the error family (:mod:`muva.utils.errors`),
who speaks under torchrun (:mod:`muva.utils.console`), collectives (:mod:`muva.utils.distributed`),
mask drawing (:mod:`muva.utils.draw`), the patch grid of an input size (:mod:`muva.utils.geometry`),
the feature-file formats (:mod:`muva.utils.featurefiles`) and safetensors checks
(:mod:`muva.utils.tensorfiles`).
"""
