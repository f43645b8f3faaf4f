"""Portal: the server-rendered pages clinic staff and radiologists use, and the health endpoints."""
