"""Analysis helpers (attention scores); not imported by the core."""
