"""An independent check of S3 POST forms signed with SigV4, because moto's server accepts any POST.

The rules follow the "POST Policy" page of AWS's Amazon S3 API Reference, which covers
browser-based uploads with Signature Version 4. The form carries a base64 JSON policy
with an `expiration` and a list of `conditions`. Its `x-amz-signature` is the hex
HMAC-SHA256 of that base64 text under the SigV4 signing key for the credential's date
and region.
Every form field except `file`, `policy`, `x-amz-signature` and names starting with
`x-ignore-` must be named by at least one condition, and every condition must hold.
Like tests/sigv4.py, it uses neither botocore nor the gateway's code.
"""

import base64
import binascii
import datetime
import hashlib
import hmac
import json

from .sigv4 import ALGORITHM, AMZ_DATE_FORMAT, SERVICE, TERMINATOR, signing_key

UNCOVERED_FIELDS = ("file", "policy", "x-amz-signature")
IGNORED_PREFIX = "x-ignore-"
REQUIRED_FIELDS = ("policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")


class PolicyError(AssertionError):
    """S3 would reject this POST form: bad signature, expired policy or a broken condition."""


def verify_post_form(
    fields: dict[str, str],
    file_size: int,
    *,
    bucket: str,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime.datetime,
) -> None:
    """Check a POST form's signature, expiry and conditions for a file of `file_size` bytes, or raise PolicyError."""
    form = _lower_case_names(fields)
    for name in REQUIRED_FIELDS:
        _expect(name in form, f"the form has no {name!r} field")

    _verify_signature(form, access_key, secret_key, region)
    policy = _decode_policy(form["policy"])
    _verify_expiration(policy, now)

    conditions = policy.get("conditions")
    _expect(isinstance(conditions, list), f"the policy's conditions are {conditions!r}, not a list")
    covered = set()
    for condition in conditions:
        covered |= _check_condition(condition, form, file_size, bucket)

    uncovered = sorted(name for name in form if name not in covered and _needs_condition(name))
    _expect(not uncovered, f"no policy condition covers the form field(s) {', '.join(uncovered)}")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise PolicyError(message)


def _needs_condition(name: str) -> bool:
    return name not in UNCOVERED_FIELDS and not name.startswith(IGNORED_PREFIX)


def _lower_case_names(fields: dict[str, str]) -> dict[str, str]:
    # NOTE: field names compare case-insensitively, but the "POST Policy" page does not say so. An
    # aws/aws-sdk-php issue on PostObjectV4 reports S3 rejecting a form whose x-amz-security-token
    # condition and field differ only in case, so real S3 may be stricter than this check.
    form = {}
    for name, value in fields.items():
        lowered = name.lower()
        _expect(lowered not in form, f"the form repeats the field {lowered!r} in different case")
        form[lowered] = value
    return form


def _verify_signature(form: dict[str, str], access_key: str, secret_key: str, region: str) -> None:
    algorithm = form["x-amz-algorithm"]
    _expect(algorithm == ALGORITHM, f"x-amz-algorithm is {algorithm!r}, expected {ALGORITHM}")

    try:
        signed_at = datetime.datetime.strptime(form["x-amz-date"], AMZ_DATE_FORMAT)
    except ValueError:
        raise PolicyError(f"x-amz-date {form['x-amz-date']!r} is not in the form 20260101T120000Z") from None
    day = signed_at.strftime("%Y%m%d")

    expected_credential = f"{access_key}/{day}/{region}/{SERVICE}/{TERMINATOR}"
    credential = form["x-amz-credential"]
    _expect(credential == expected_credential, f"x-amz-credential is {credential!r}, expected {expected_credential}")

    key = signing_key(secret_key, day, region)
    expected = hmac.new(key, form["policy"].encode("utf-8"), hashlib.sha256).hexdigest()
    _expect(hmac.compare_digest(expected, form["x-amz-signature"]), "the policy signature does not match")


def _decode_policy(encoded: str) -> dict:
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise PolicyError("the policy field is not base64-encoded UTF-8 JSON") from None

    _expect(isinstance(policy, dict), f"the policy is {type(policy).__name__}, not a JSON object")
    return policy


def _verify_expiration(policy: dict, now: datetime.datetime) -> None:
    raw = policy.get("expiration")
    _expect(isinstance(raw, str), f"the policy's expiration is {raw!r}, not an ISO 8601 string")
    try:
        expiration = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise PolicyError(f"the policy's expiration {raw!r} is not an ISO 8601 time") from None

    _expect(expiration.tzinfo is not None, f"the policy's expiration {raw!r} has no time zone")
    _expect(now <= expiration, f"the policy expired at {raw}")


def _check_condition(condition: object, form: dict[str, str], file_size: int, bucket: str) -> set[str]:
    """Check one condition and return the lower-case names of the form fields it covers."""
    if isinstance(condition, dict):
        for name, value in condition.items():
            _check_equal(name.lower(), value, form, bucket)
        return {name.lower() for name in condition}

    _expect(isinstance(condition, list) and condition, f"the policy condition {condition!r} is neither object nor list")
    operator = condition[0]

    if operator == "content-length-range":
        _check_length(condition, file_size)
        return set()

    _expect(operator in ("eq", "starts-with"), f"the policy condition {condition!r} has an unknown operator")
    _expect(len(condition) == 3, f"the policy condition {condition!r} needs an operator, a $field and a value")
    _, reference, value = condition
    _expect(
        isinstance(reference, str) and reference.startswith("$"),
        f"the policy condition {condition!r} names no $field",
    )
    name = reference[1:].lower()

    if operator == "eq":
        _check_equal(name, value, form, bucket)
    else:
        _check_prefix(name, value, form)
    return {name}


def _check_equal(name: str, expected: object, form: dict[str, str], bucket: str) -> None:
    _expect(isinstance(expected, str), f"the policy condition on {name!r} has the value {expected!r}, not a string")

    # The bucket is named by the request's URL, not by a form field.
    actual = bucket if name == "bucket" else form.get(name)
    _expect(actual is not None, f"the form has no {name!r} field, which the policy requires to be {expected!r}")
    _expect(actual == expected, f"the form field {name!r} is {actual!r}, but the policy requires {expected!r}")


def _check_prefix(name: str, prefix: object, form: dict[str, str]) -> None:
    _expect(isinstance(prefix, str), f"the starts-with condition on {name!r} has the value {prefix!r}, not a string")
    actual = form.get(name)
    _expect(actual is not None, f"the form has no {name!r} field, which the policy requires to start with {prefix!r}")

    # A Content-Type may list several types separated by commas, and each must start with the prefix.
    values = [part.strip() for part in actual.split(",")] if name == "content-type" else [actual]
    for value in values:
        _expect(
            value.startswith(prefix), f"the form field {name!r} is {actual!r}, but the policy requires {prefix!r}..."
        )


def _check_length(condition: list, file_size: int) -> None:
    _expect(len(condition) == 3, f"the policy condition {condition!r} needs a minimum and a maximum")
    _, minimum, maximum = condition
    _expect(
        all(isinstance(bound, int) and not isinstance(bound, bool) for bound in (minimum, maximum)),
        f"the content-length-range bounds {minimum!r} and {maximum!r} are not whole numbers",
    )
    _expect(file_size >= minimum, f"the file has {file_size} bytes, under the content-length-range minimum {minimum}")
    _expect(file_size <= maximum, f"the file has {file_size} bytes, over the content-length-range maximum {maximum}")
