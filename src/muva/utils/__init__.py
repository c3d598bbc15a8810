"""Small shared helpers, the lowest layer (imports no other muva package).

Progress bars, atomic file writes, lazy exports, errors, command-line messages
(:mod:`muva.utils.console`), collectives (:mod:`muva.utils.distributed`), mask drawing
(:mod:`muva.utils.draw`), the feature-folder format (:mod:`muva.utils.featurefiles`) and
safetensors checks (:mod:`muva.utils.tensorfiles`).
"""
