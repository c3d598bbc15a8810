"""Visualisation of a trained model's behaviour.

* :mod:`muva.viz.ranks` — ranked lists (query + top-k gallery, green/red borders,
  distances, file names) as PNG files and one HTML page (``muva viz ranks``);
* :mod:`muva.viz.masks` — predicted part masks (per layer or final) and pseudo masks
  overlaid on images (``muva viz masks``).
* :mod:`muva.viz.report` — self-contained HTML reports (the ``muva demo`` report).

Only PIL and numpy are needed to draw; the model is loaded by the commands.
"""
