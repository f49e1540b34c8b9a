"""The patient record store, encrypted at rest.

- `resources`: FHIR resources by patient and type, sealed field by field;
- `database`: SQLite and PostgreSQL behind one interface (the only module that imports a driver);
- `migrations`: the versioned schema;
- `partitions`: the audit table's monthly partitions on PostgreSQL;
- `encryption`, `keyring`: envelope encryption, per-patient data keys, blind indexes;
- `consent`: consent directives read from the record;
- `directory`: the keys a patient can be found by;
- `search_index`: FHIR search parameters (host.search) on a sealed index;
- `pseudonyms`: keyed research pseudonyms.

Never reaches the runtime, the catalogue, the policy, the audit trail or HTTP.
"""
