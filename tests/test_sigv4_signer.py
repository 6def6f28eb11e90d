"""The fast SigV4 signer against botocore's own presigner: the URLs must be identical."""

import asyncio
import datetime
import string
import urllib.request
from unittest import mock

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.credentials import Credentials, RefreshableCredentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.disposition import content_disposition
from gateway.errors import MalformedKey
from gateway.keys import validate_key
from gateway.s3 import Presigner
from gateway.sigv4 import QuerySigner, signer_like_botocore

from .conftest import ACCESS_KEY, BUCKET, SECRET_KEY
from .sigv4 import verify_presigned_url

_SESSION = get_session()
_OPERATIONS = {"GET": "get_object", "HEAD": "head_object"}

# Characters that stress percent-encoding: reserved, unreserved, space, and multi-byte UTF-8.
_KEY_ALPHABET = st.one_of(
    st.sampled_from(list("+%~ !*'()&=?#;:@$,[]\"<>^`{|}\\") + ["é", "ü", "中", "😀", "\u00a0"]),
    st.characters(exclude_categories=("Cs", "Cc")),
)


def _valid_key(text: str) -> bool:
    try:
        validate_key(text, "")
    except MalformedKey:
        return False
    return True


keys = (
    st.lists(st.text(_KEY_ALPHABET, min_size=1, max_size=20), min_size=1, max_size=4).map("/".join).filter(_valid_key)
)
prefixes = st.sampled_from(["media/", "", "uploads/2024/", "a b+c/"])
filenames = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
content_types = st.one_of(
    st.sampled_from(["image/png", "video/mp4", "text/plain; charset=utf-8", "application/pdf"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30),
)
secrets = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
access_keys = st.text(string.ascii_uppercase + string.digits + "+/=_-", min_size=1, max_size=24)
tokens = st.none() | st.text(string.ascii_letters + string.digits + "+/=%~ ", min_size=1, max_size=80)
regions = st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2", "sa-east-1"]) | st.from_regex(
    r"\A[a-z]{2}-[a-z]{4,9}-[1-9]\Z"
)
buckets = st.sampled_from(["media-gateway-test", "my.dotted.bucket", "abc", "bucket-with-dash-1"])
endpoints = st.one_of(
    st.none(),
    st.builds(
        lambda scheme, host, port: f"{scheme}://{host}{port}",
        st.sampled_from(["http", "https"]),
        st.sampled_from(["127.0.0.1", "localhost", "minio.example.com", "S3.Example.Org", "[::1]"]),
        st.sampled_from(["", ":80", ":443", ":9000", ":65535"]),
    ),
)
timestamps = st.integers(
    min_value=int(datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC).timestamp()),
    max_value=int(datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC).timestamp()),
)
requests = st.tuples(
    keys,
    st.sampled_from(["GET", "HEAD"]),
    st.none() | st.builds(content_disposition, st.sampled_from(["inline", "attachment"]), filenames),
    st.none() | content_types,
    timestamps,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    endpoint=endpoints,
    style=st.sampled_from(["auto", "path", "virtual"]),
    region=regions,
    bucket=buckets,
    prefix=prefixes,
    access_key=access_keys,
    secret_key=secrets,
    token=tokens,
    ttl=st.integers(min_value=1, max_value=604800),
    cases=st.lists(requests, min_size=1, max_size=6),
)
def test_fast_signer_matches_botocore(
    endpoint, style, region, bucket, prefix, access_key, secret_key, token, ttl, cases
):
    credentials = Credentials(access_key, secret_key, token)
    asyncio.run(_compare(endpoint, style, region, bucket, prefix, credentials, ttl, cases))


async def _compare(endpoint, style, region, bucket, prefix, credentials, ttl, cases) -> None:
    async with _client(endpoint, style, region, credentials) as client:
        signer = await signer_like_botocore(client, credentials, bucket, prefix, ttl)
        assert signer is not None, "no fast signer for this configuration"
        presigner = Presigner(client, bucket, prefix, ttl, stable_window=0, signer=signer)

        for key, method, disposition, content_type, signed_at in cases:
            expected = await _botocore_url(
                client, bucket, prefix + key, method, disposition, content_type, ttl, signed_at
            )
            signed = await presigner.presign(key, method, disposition, content_type, now=signed_at)
            assert signed.url == expected


def _client(endpoint, style, region, credentials):
    return _SESSION.create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
        config=AioConfig(signature_version="s3v4", s3={"addressing_style": style}),
    )


async def _botocore_url(client, bucket, key, method, disposition, content_type, ttl, signed_at) -> str:
    params = {"Bucket": bucket, "Key": key}
    if disposition is not None:
        params["ResponseContentDisposition"] = disposition
    if content_type is not None:
        params["ResponseContentType"] = content_type

    # botocore reads the clock itself; this pins it to the time the fast signer is given.
    frozen = datetime.datetime.fromtimestamp(signed_at, datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=frozen):
        return await client.generate_presigned_url(_OPERATIONS[method], Params=params, ExpiresIn=ttl)


async def test_refreshable_credentials_keep_botocore():
    credentials = RefreshableCredentials(
        ACCESS_KEY,
        SECRET_KEY,
        None,
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
        refresh_using=lambda: {},
        method="test",
    )
    async with _client("http://127.0.0.1:9000", "path", "us-east-1", Credentials(ACCESS_KEY, SECRET_KEY)) as client:
        signer = await signer_like_botocore(client, credentials, BUCKET, "media/", 60)

    assert signer is None


async def test_mismatched_credentials_keep_botocore():
    other = Credentials("AKIDOTHER", "another-secret")
    async with _client("http://127.0.0.1:9000", "path", "us-east-1", Credentials(ACCESS_KEY, SECRET_KEY)) as client:
        signer = await signer_like_botocore(client, other, BUCKET, "media/", 60)

    assert signer is None


def test_signer_rejects_other_methods():
    signer = QuerySigner("http://127.0.0.1:9000/bucket/", "us-east-1", ACCESS_KEY, SECRET_KEY)

    with pytest.raises(ValueError, match="PUT"):
        signer.presign("key", "PUT", 60, 1_700_000_000)


def test_signing_key_cached_per_date_and_region():
    signer = QuerySigner("http://127.0.0.1:9000/bucket/", "eu-west-1", ACCESS_KEY, SECRET_KEY)

    signer.presign("a", "GET", 60, 1_700_000_000)
    signer.presign("b", "GET", 60, 1_700_000_100)
    signer.presign("c", "GET", 60, 1_700_000_000 + 86400)

    assert sorted(signer._signing_keys) == [("20231114", "eu-west-1"), ("20231115", "eu-west-1")]


async def test_fast_url_fetches_object_from_moto(moto, s3):
    s3.put_object(Bucket=BUCKET, Key="media/dir/a b+c~é.txt", Body=b"hello")
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)

    async with _client(moto.endpoint_url, "path", "us-east-1", credentials) as client:
        signer = await signer_like_botocore(client, credentials, BUCKET, "media/", 600)
        presigner = Presigner(client, BUCKET, "media/", 600, stable_window=0, signer=signer)
        signed = await presigner.presign("dir/a b+c~é.txt", "GET", content_disposition("attachment", "naïve.txt"))

    with urllib.request.urlopen(signed.url, timeout=5) as response:
        body = response.read()
        disposition = response.headers["Content-Disposition"]

    assert body == b"hello"
    assert disposition == content_disposition("attachment", "naïve.txt")


async def test_fast_head_url_accepted_by_moto(moto, s3):
    s3.put_object(Bucket=BUCKET, Key="media/head me.txt", Body=b"12345")
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)

    async with _client(moto.endpoint_url, "path", "us-east-1", credentials) as client:
        signer = await signer_like_botocore(client, credentials, BUCKET, "media/", 600)
        presigner = Presigner(client, BUCKET, "media/", 600, stable_window=60, signer=signer)
        head = await presigner.presign("head me.txt", "HEAD")

    with urllib.request.urlopen(urllib.request.Request(head.url, method="HEAD"), timeout=5) as response:
        length = response.headers["Content-Length"]

    # NOTE: moto's server does not check presigned signatures, so this proves only the URL's form.
    # The comparison with botocore above proves the signature.
    assert length == "5"


@pytest.mark.parametrize(
    "response_params",
    [
        [("response-content-type", "image/png"), ("response-content-disposition", "inline")],
        # Names that sort before or among the X-Amz-* ones, which the canonical query must merge.
        [("A-custom", "1"), ("response-content-type", "text/plain")],
        [("X-Amz-Abc", "2")],
        [("X-Amz-Zz", "3"), ("Y", "4")],
    ],
)
@pytest.mark.parametrize("session_token", [None, "token/with+reserved=chars"])
def test_signature_holds_for_any_parameter_order(response_params, session_token):
    signer = QuerySigner("http://127.0.0.1:9/bucket/", "eu-west-1", "AKIDEXAMPLE", "secret", session_token)
    signed_at = int(datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC).timestamp())

    url = signer.presign("media/a b.jpg", "GET", 600, signed_at, response_params)

    verify_presigned_url(
        url,
        method="GET",
        bucket="bucket",
        access_key="AKIDEXAMPLE",
        secret_key="secret",
        region="eu-west-1",
        now=datetime.datetime(2026, 12, 4, 12, 1, tzinfo=datetime.UTC),
    )
