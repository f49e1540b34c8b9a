"""FHIR search parameters, evaluated: plain computation on resources, no database, no keys.

- `params`: which element each parameter reads, per type, and the index entries made from them;
- `query`: a search read from (name, value) pairs and evaluated on an index's columns;
- `columns`: the index's stored form;
- `memory`: a search evaluated over resources held in memory (the warm-up's synthetic patient).

The store keeps the index sealed beside the resources (host.store.search_index); the catalogue's
warm-up evaluates the same searches over its own synthetic records. Both import this package,
which imports neither.
"""
