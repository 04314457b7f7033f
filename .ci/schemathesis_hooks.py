"""schemathesis hooks for .ci/schemathesis.

- Every valid request that carries an Idempotency-Key gets its own, as a real client sends
  one per request: schemathesis draws keys from their pattern and repeats them, and the
  same key with another body is refused (422), which is the API keeping its promise.
  Negative cases are left as drawn (changing them would turn them positive and undo the
  header they leave out on purpose).

- `POST /api/v1/policies/validate` takes a policy as TOML text: the generated string is sent
  as it is.
"""
import uuid

import schemathesis


@schemathesis.hook
def before_call(ctx, case, kwargs):
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative:
        return
    for name in list(case.headers or {}):
        if name.lower() == "idempotency-key":
            case.headers[name] = str(uuid.uuid4())


@schemathesis.serializer("application/toml")
def toml_serializer(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
