"""Django's PostgreSQL backend with a pool check that survives a database restart."""
