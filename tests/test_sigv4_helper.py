"""The SigV4 verifier must accept what botocore signs and reject any edit of it.

botocore is the reference here: these tests check the helper, not the gateway.
"""

import datetime
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config

from .sigv4 import SignatureError, verify_presigned_url

ACCESS_KEY = "AKIDHELPERCHECK"
SECRET_KEY = "helper-secret-key"
BUCKET = "helper-bucket"
KEY = "media/dir/report ü+%~.pdf"
DISPOSITION = "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
# Presigning is offline, so this endpoint is never contacted.
ENDPOINT = "http://127.0.0.1:9"


def presign(
    method: str = "GET",
    region: str = "us-east-1",
    style: str = "path",
    endpoint: str = ENDPOINT,
    expires: int = 300,
) -> str:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": style}),
    )
    params = {"Bucket": BUCKET, "Key": KEY}
    if method == "GET":
        params["ResponseContentDisposition"] = DISPOSITION
        params["ResponseContentType"] = "application/pdf"
    operation = {"GET": "get_object", "HEAD": "head_object"}[method]
    return client.generate_presigned_url(operation, Params=params, ExpiresIn=expires)


def verify(url: str, method: str = "GET", region: str = "us-east-1", **options):
    return verify_presigned_url(
        url, method=method, bucket=BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=region, **options
    )


def change_signature_char(url: str) -> str:
    """Replace the first hex digit of X-Amz-Signature with another one."""
    start = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    replacement = "0" if url[start] != "0" else "1"
    return url[:start] + replacement + url[start + 1 :]


# The worked example of AWS's page "Authenticating Requests: Using Query Parameters (AWS Signature
# Version 4)" in the Amazon S3 API reference, with its documented example credentials.
AWS_EXAMPLE_URL = (
    "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)


def verify_aws_example(url: str):
    return verify_presigned_url(
        url,
        method="GET",
        bucket="examplebucket",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        max_expires=86400,
        now=datetime.datetime(2013, 5, 24, 0, 0, 30, tzinfo=datetime.UTC),
    )


def test_accepts_aws_published_example():
    assert verify_aws_example(AWS_EXAMPLE_URL).key == "test.txt"


def test_rejects_edited_aws_example():
    with pytest.raises(SignatureError):
        verify_aws_example(change_signature_char(AWS_EXAMPLE_URL))


def test_accepts_botocore_get():
    signed = verify(presign("GET"))
    assert signed.key == KEY


def test_returns_decoded_overrides():
    signed = verify(presign("GET"))
    assert signed.overrides == {"response-content-disposition": DISPOSITION, "response-content-type": "application/pdf"}


def test_accepts_botocore_head():
    signed = verify(presign("HEAD"), method="HEAD")
    assert signed.overrides == {}


def test_accepts_virtual_host_style():
    signed = verify(presign(style="virtual", endpoint="https://s3.example.test"))
    assert signed.host == f"{BUCKET}.s3.example.test"


def test_virtual_host_style_key():
    signed = verify(presign(style="virtual", endpoint="https://s3.example.test"))
    assert signed.key == KEY


def test_accepts_other_region():
    signed = verify(presign(region="eu-west-1"), region="eu-west-1")
    assert signed.region == "eu-west-1"


def test_reports_expiry():
    signed = verify(presign(expires=300))
    assert signed.expires_in == 300


def test_rejects_changed_signature():
    url = presign()
    changed = change_signature_char(url)
    assert changed != url
    with pytest.raises(SignatureError):
        verify(changed)


def test_rejects_changed_key():
    url = presign()
    changed = url.replace(quote("report"), quote("repors"), 1)
    assert changed != url
    with pytest.raises(SignatureError):
        verify(changed)


def test_rejects_changed_override():
    url = presign()
    changed = url.replace("attachment", "attachmenu", 1)
    assert changed != url
    with pytest.raises(SignatureError):
        verify(changed)


def test_rejects_added_override():
    with pytest.raises(SignatureError):
        verify(presign() + "&response-cache-control=no-cache")


def test_rejects_get_url_for_head():
    with pytest.raises(SignatureError):
        verify(presign("GET"), method="HEAD")


def test_rejects_head_url_for_get():
    with pytest.raises(SignatureError):
        verify(presign("HEAD"), method="GET")


def test_rejects_wrong_secret():
    with pytest.raises(SignatureError):
        verify_presigned_url(
            presign(), method="GET", bucket=BUCKET, access_key=ACCESS_KEY, secret_key="other", region="us-east-1"
        )


def test_rejects_wrong_region():
    with pytest.raises(SignatureError):
        verify(presign(region="eu-west-1"), region="us-east-1")


def test_rejects_changed_host():
    with pytest.raises(SignatureError):
        verify(presign().replace("127.0.0.1:9", "127.0.0.1:10", 1))


def test_rejects_expires_over_limit():
    with pytest.raises(SignatureError):
        verify(presign(expires=301), max_expires=300)


def test_rejects_expired_url():
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=301)
    with pytest.raises(SignatureError):
        verify(presign(expires=300), now=later, max_clock_skew=400)


def test_rejects_stale_signing_date():
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=200)
    with pytest.raises(SignatureError):
        verify(presign(expires=3600), now=later, max_clock_skew=120)


def test_rejects_other_bucket():
    with pytest.raises(SignatureError):
        verify_presigned_url(
            presign(), method="GET", bucket="other", access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1"
        )


def test_rejects_plus_for_space_in_path():
    url = presign()
    changed = url.replace("%20", "+", 1)
    assert changed != url
    with pytest.raises(SignatureError):
        verify(changed)
