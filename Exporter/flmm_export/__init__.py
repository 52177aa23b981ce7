"""F-LMM GroundingCache exporter: frozen Hugging Face LMM features -> NetCDF (schema v1)."""
