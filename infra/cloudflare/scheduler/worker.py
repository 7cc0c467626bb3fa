"""Cloudflare Python Workers entry shim, copied to build/worker.py (`main` in wrangler.toml).

The Worker itself is handlers/cloudflare.py; the build step puts core/ and handlers/ beside this
file in build/.
"""

from handlers.cloudflare import Default

__all__ = ["Default"]
