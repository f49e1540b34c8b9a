"""The functions a host serves: what they are, how they are built, and which ones are loaded.

- `manifest`: a function's `function.toml`, read and checked;
- `arguments`: a function's published argument schema;
- `build`: componentize-py and the precompile step;
- `artifacts`: the cache of precompiled components, checked before loading;
- `oci`: signed function packages as OCI image layouts;
- `warmup`: the synthetic patient a prepared instance is warmed with;
- `registry`: the functions loaded into this host, swapped on reload.

Reaches the runtime (to load and prepare components), never the store, the data generators,
the audit trail or HTTP.
"""
