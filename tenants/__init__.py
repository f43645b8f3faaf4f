"""Tenants: clinics, memberships, credentials, tokens, and the one place tenant scoping is enforced."""
