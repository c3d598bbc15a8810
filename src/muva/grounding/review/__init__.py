"""Looking at grounding caches and experts from the command line: ``muva ground experts | stats | show | eval | merge``."""
