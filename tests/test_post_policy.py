"""The POST policy checker must accept the forms botocore signs and reject each way S3 would refuse one.

botocore is the reference here: these tests check the helper, not the gateway.
"""

import base64
import datetime
import json

import boto3
import pytest
from botocore.config import Config

from .post_policy import PolicyError, verify_post_form

ACCESS_KEY = "AKIDPOLICYCHECK"
SECRET_KEY = "policy-secret-key"
BUCKET = "policy-bucket"
KEY = "media/uploads/abc/photo.png"
REGION = "eu-west-1"
MAX_BYTES = 500
MIN_BYTES = 10
TTL = 600
# Signing a POST form is offline, so this endpoint is never contacted.
ENDPOINT = "http://127.0.0.1:9"


def presign_form(conditions: list | None = None, fields: dict | None = None, token: str | None = None) -> dict:
    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=token,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    if conditions is None:
        conditions = [{"Content-Type": "image/png"}, ["content-length-range", MIN_BYTES, MAX_BYTES]]
    form = client.generate_presigned_post(
        Bucket=BUCKET,
        Key=KEY,
        Fields={"Content-Type": "image/png", **(fields or {})},
        Conditions=conditions,
        ExpiresIn=TTL,
    )
    return dict(form["fields"])


def verify(fields: dict, size: int = MAX_BYTES, *, secret_key: str = SECRET_KEY, now=None) -> None:
    verify_post_form(
        fields,
        size,
        bucket=BUCKET,
        access_key=ACCESS_KEY,
        secret_key=secret_key,
        region=REGION,
        now=now or datetime.datetime.now(datetime.UTC),
    )


def decoded_policy(fields: dict) -> dict:
    return json.loads(base64.b64decode(fields["policy"]))


def test_botocore_form_passes():
    verify(presign_form())


def test_botocore_form_with_session_token_passes():
    fields = presign_form(token="session-token-value")

    assert fields["x-amz-security-token"] == "session-token-value"
    verify(fields)


@pytest.mark.parametrize("size", [MIN_BYTES, MAX_BYTES])
def test_size_at_range_bound_passes(size):
    verify(presign_form(), size)


def test_starts_with_condition_passes():
    conditions = [["starts-with", "$Content-Type", "image/"], ["starts-with", "$x-amz-meta-tag", ""]]

    verify(presign_form(conditions, fields={"x-amz-meta-tag": "anything"}))


def test_field_names_compare_case_insensitively():
    fields = presign_form()
    fields["CONTENT-TYPE"] = fields.pop("Content-Type")
    fields["X-Amz-Signature"] = fields.pop("x-amz-signature")

    verify(fields)


def test_ignored_field_passes():
    fields = {**presign_form(), "x-ignore-submit": "Upload"}

    verify(fields)


def test_tampered_policy_fails():
    fields = presign_form()
    policy = decoded_policy(fields)
    policy["conditions"][1] = ["content-length-range", MIN_BYTES, MAX_BYTES * 1000]
    fields["policy"] = base64.b64encode(json.dumps(policy).encode()).decode()

    with pytest.raises(PolicyError, match="signature does not match"):
        verify(fields)


def test_wrong_secret_fails():
    with pytest.raises(PolicyError, match="signature does not match"):
        verify(presign_form(), secret_key="another-secret")


def test_changed_credential_fails():
    fields = presign_form()
    fields["x-amz-credential"] = fields["x-amz-credential"].replace(REGION, "us-east-1")

    with pytest.raises(PolicyError, match="x-amz-credential is"):
        verify(fields)


def test_sigv2_form_fails():
    fields = presign_form()
    fields["x-amz-algorithm"] = "AWS4-HMAC-SHA1"

    with pytest.raises(PolicyError, match="x-amz-algorithm is 'AWS4-HMAC-SHA1'"):
        verify(fields)


def test_missing_signature_fails():
    fields = presign_form()
    del fields["x-amz-signature"]

    with pytest.raises(PolicyError, match="no 'x-amz-signature' field"):
        verify(fields)


def test_expired_policy_fails():
    fields = presign_form()
    expiration = datetime.datetime.fromisoformat(decoded_policy(fields)["expiration"])

    verify(fields, now=expiration)
    with pytest.raises(PolicyError, match="policy expired at"):
        verify(fields, now=expiration + datetime.timedelta(seconds=1))


def test_file_over_max_fails():
    with pytest.raises(PolicyError, match=f"{MAX_BYTES + 1} bytes, over the content-length-range maximum {MAX_BYTES}"):
        verify(presign_form(), MAX_BYTES + 1)


def test_file_under_min_fails():
    with pytest.raises(PolicyError, match=f"{MIN_BYTES - 1} bytes, under the content-length-range minimum {MIN_BYTES}"):
        verify(presign_form(), MIN_BYTES - 1)


def test_changed_content_type_fails():
    fields = {**presign_form(), "Content-Type": "text/html"}

    with pytest.raises(PolicyError, match="'content-type' is 'text/html', but the policy requires 'image/png'"):
        verify(fields)


def test_content_type_outside_prefix_fails():
    fields = presign_form([["starts-with", "$Content-Type", "image/"]], fields={"Content-Type": "image/png,text/html"})

    with pytest.raises(PolicyError, match="'content-type' is 'image/png,text/html'"):
        verify(fields)


def test_changed_key_fails():
    fields = {**presign_form(), "key": "media/uploads/other/photo.png"}

    with pytest.raises(PolicyError, match="'key' is 'media/uploads/other/photo.png', but the policy requires"):
        verify(fields)


def test_missing_content_type_fails():
    fields = presign_form()
    del fields["Content-Type"]

    with pytest.raises(PolicyError, match="no 'content-type' field"):
        verify(fields)


def test_uncovered_field_fails():
    fields = {**presign_form(), "x-amz-meta-note": "added", "acl": "public-read"}

    with pytest.raises(PolicyError, match="no policy condition covers the form field[(]s[)] acl, x-amz-meta-note"):
        verify(fields)


def test_other_bucket_fails():
    with pytest.raises(PolicyError, match="'bucket' is 'other-bucket', but the policy requires 'policy-bucket'"):
        verify_post_form(
            presign_form(),
            MAX_BYTES,
            bucket="other-bucket",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            now=datetime.datetime.now(datetime.UTC),
        )


def test_field_repeated_in_other_case_fails():
    fields = {**presign_form(), "content-type": "text/html"}

    with pytest.raises(PolicyError, match="repeats the field 'content-type'"):
        verify(fields)
