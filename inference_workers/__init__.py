"""AI worker pools: a Celery app of their own that imports neither Django nor `saas` (no PHI, no database)."""
