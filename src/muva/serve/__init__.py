"""``muva serve``: an HTTP person-search service over an editable, persistent gallery.

* :mod:`muva.serve.app` — the FastAPI app (``create_app(service)``): endpoints, token, limits;
* :mod:`muva.serve.service` — the model + gallery + counters (``open_service``);
* :mod:`muva.serve.gallery` — the gallery: base features, journal of changes, faiss index;
* :mod:`muva.serve.limits` — upload, pixel, batch and ``k`` limits.

Nothing is imported here: fastapi (the optional ``muva[serve]`` extra) and torch load only
when the service starts.
"""
