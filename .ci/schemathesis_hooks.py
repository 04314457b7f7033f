"""schemathesis hooks for .ci/schemathesis.

- `POST /api/v1/policies/validate` takes a policy as TOML text: the generated string is sent
  as it is.
"""
import schemathesis


@schemathesis.serializer("application/toml")
def toml_serializer(ctx, value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
