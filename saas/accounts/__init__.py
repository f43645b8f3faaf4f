"""Accounts: people, sign-in and sign-out, and who may act as what."""
