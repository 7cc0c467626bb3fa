"""The console's tests share the API tests' in-process app (`make_api`) and the docs page
test's headless Chromium (`browser`)."""

from tests.api.conftest import make_api  # noqa: F401
from tests.api.test_docs_browser import browser  # noqa: F401
