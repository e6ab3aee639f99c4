"""Gateway middleware: check each model call with the guardrails service and block in the API's own shape."""

from guardrails.middleware.apis import Api, BlockNotice, EventKind, detect_api
from guardrails.middleware.asgi import CHECK_ID_HEADER, VERDICT_HEADER, GuardrailsMiddleware

__all__ = ["CHECK_ID_HEADER", "VERDICT_HEADER", "Api", "BlockNotice", "EventKind", "GuardrailsMiddleware",
           "detect_api"]
