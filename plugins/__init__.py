"""Built-in analysis plugins (installed as `prevpos_plugins`). Every module here is discovered automatically."""
