"""Access decisions: who may run which function, for which patient and purpose, and under what obligations.

- `engine`: the decision input, the in-process Rego engine (regopy) and reading its document;
- `opa`: the OPA sidecar as an engine;
- `cache`: decisions cached by their input;
- `obligations`: masked and dropped fields, applied to records and checked in answers;
- `bundle`: the policy as an OPA bundle;
- `table`: the decision table every engine is checked against.

Never reaches the runtime, the catalogue, the store, the audit trail or HTTP.
"""
