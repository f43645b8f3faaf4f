"""The ReadRoom Django project: configuration and one app per domain."""
