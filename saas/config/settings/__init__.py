"""Settings per environment: `local`, `test` and `production`, all built on `base`."""
