"""wardfn host: runs patient-data functions as WebAssembly components behind a policy decision."""
