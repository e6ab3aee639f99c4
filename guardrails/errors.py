"""Errors that reach the caller as `{"error": {"type", "message", "pointer"?}}`."""

from __future__ import annotations


class GuardrailsError(Exception):
    """An error with an HTTP status and a stable `type` string."""

    status = 400
    type = "bad_request"

    def __init__(self, message: str, pointer: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pointer = pointer

    def to_dict(self) -> dict[str, object]:
        error: dict[str, object] = {"type": self.type, "message": self.message}
        if self.pointer is not None:
            error["pointer"] = self.pointer
        return {"error": error}


class InvalidJSON(GuardrailsError):
    status = 400
    type = "invalid_json"


class BodyTooLarge(GuardrailsError):
    status = 413
    type = "body_too_large"


class UnsupportedMediaType(GuardrailsError):
    status = 415
    type = "unsupported_media_type"


class BodyError(GuardrailsError):
    """The body is JSON but not a check body we can read (wrong types, unknown format...)."""

    status = 422
    type = "invalid_body"


class UnknownFormat(BodyError):
    type = "unknown_format"


class AmbiguousFormat(BodyError):
    type = "ambiguous_format"


class UnknownPolicy(BodyError):
    type = "unknown_policy"


class PolicyUnavailable(GuardrailsError):
    """The policy the server's configuration chose (routing.yml, the default policy) is not there: the body named
    none, so this is not the caller's error (a policy that exists but does not load is reported the same way)."""

    status = 503
    type = "policy_unavailable"


class NotFound(GuardrailsError):
    status = 404
    type = "not_found"


class AuditUnavailable(GuardrailsError):
    """The audit record could not be written: the check fails rather than return an unaudited verdict."""

    status = 503
    type = "audit_unavailable"


class InvalidIdempotencyKey(GuardrailsError):
    status = 422
    type = "invalid_idempotency_key"


class IdempotencyKeyReused(GuardrailsError):
    status = 422
    type = "idempotency_key_reused"
