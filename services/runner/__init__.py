"""The runner: proxies program runs to partner machines and records their events."""
