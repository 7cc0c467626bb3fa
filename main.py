"""Google Cloud Functions entry point: functions-framework loads this file (the source root) and
serves the function `--entry-point` names: `api` (HTTP) or `drain` (the Pub/Sub tick). See
handlers/gcp.py."""

from handlers.gcp import api, drain, log_to_cloud_logging

log_to_cloud_logging()

__all__ = ["api", "drain"]
