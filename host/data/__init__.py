"""Data for the store: the synthetic patient generator and the FHIR bundle import.

Writes through the store; never reaches the runtime, the catalogue, the policy, the audit trail or HTTP.
"""
