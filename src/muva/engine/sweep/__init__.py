"""Seeded sweeps: config variants × seeds (:mod:`.plan`), run as ``muva train`` processes
(:mod:`.runner`), aggregated with intervals over seeds and over queries (:mod:`.aggregate`).

The command line is ``muva sweep`` (see ``docs/sweeps.md``).
"""
