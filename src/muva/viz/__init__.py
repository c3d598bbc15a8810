"""Visualisation of a trained model's behaviour.

* :mod:`muva.viz.ranks` — ranked lists (query + top-k gallery, green/red borders,
  distances, file names) as PNG files and one HTML page (``muva viz ranks``);
* :mod:`muva.viz.masks` — predicted part masks (per layer or final) and pseudo masks
  overlaid on images (``muva viz masks``).
* :mod:`muva.viz.report` — self-contained HTML reports (the ``muva demo`` report);
* :mod:`muva.viz.sweep_plots` — PNG figures of a seeded sweep (intervals, differences to a
  reference, CMC curves); needs matplotlib (``pip install 'muva[plots]'``);
* :mod:`muva.viz.sweep_report` — the tables and figures of ``muva sweep report``.

Ranked lists, masks and the HTML report need only PIL and numpy; the model is loaded by the commands.
"""

from muva.viz.sweep_plots import PlotsUnavailable  # noqa: F401 - cheap: matplotlib loads when a figure is drawn
