"""Cloudflare Python Workers entry shim (`main` in wrangler.toml): the Worker is in handlers/."""

from handlers.cloudflare import Default

__all__ = ["Default"]
