"""The partner registry: partners, API keys and machine fleets."""
