"""The operator console at /console: one server-rendered page and a few files of vanilla
JavaScript and CSS (core/console/static/), no CDN. Every figure it shows comes from the API
(`/api/scheduler/...`, with the API key the page asks for), as the CLI's do.

Nothing imports this package but the app's `/console` routes, on their first request
(core/routes.py): API requests and cold starts never pay for it."""
