"""Settings parsed from an environment mapping: defaults, every variable, every invalid value."""

import ipaddress

import pytest
from cryptography.fernet import Fernet

from gateway.errors import ConfigError
from gateway.settings import load_settings

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
SERVE_REQUIRES = ("DATABASE_URL", "S3_BUCKET", "SESSION_SECRET")
MINIMAL = {
    "DATABASE_URL": "postgres://gateway:pw@db.internal:5432/media",
    "S3_BUCKET": "media-bucket",
    "SESSION_SECRET": KEY_A,
}


def load(**overrides: str):
    return load_settings({**MINIMAL, **overrides}, require=SERVE_REQUIRES)


def config_error(**overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(**overrides)
    return caught.value


class TestDefaults:
    def test_port(self):
        assert load().port == 8080

    def test_region(self):
        assert load().s3_region == "us-east-1"

    def test_endpoint_is_aws(self):
        assert load().s3_endpoint_url is None

    def test_public_endpoint_unset(self):
        assert load().s3_public_endpoint_url is None

    def test_addressing_style(self):
        assert load().s3_addressing_style == "auto"

    def test_media_route(self):
        assert load().media_route == "/media"

    def test_media_prefix(self):
        assert load().media_prefix == "media/"

    def test_media_url_ttl(self):
        assert load().media_url_ttl == 3600

    def test_cookie_name(self):
        assert load().session_cookie_name == "gateway_session"

    def test_session_max_age(self):
        assert load().session_max_age == 1209600

    def test_login_url_unset(self):
        assert load().login_url is None

    def test_upload_max_bytes_positive(self):
        assert load().upload_max_bytes > 0

    def test_upload_content_types_present(self):
        assert load().upload_content_types != ()

    def test_forwarded_allow_ips_is_loopback(self):
        assert load().forwarded_allow_ips == (ipaddress.ip_network("127.0.0.1/32"),)

    def test_statement_cache_left_to_asyncpg(self):
        assert load().database_statement_cache_size is None

    def test_log_level(self):
        assert load().log_level == "INFO"


class TestValues:
    def test_port(self):
        assert load(PORT="5000").port == 5000

    @pytest.mark.parametrize(
        "url",
        ["postgres://u:p@h:5432/d", "postgresql://u:p@h:5432/d", "postgres://u:p@h/d?sslmode=require"],
        ids=["postgres", "postgresql", "sslmode"],
    )
    def test_database_url_schemes(self, url):
        assert load(DATABASE_URL=url).database_url == url

    def test_bucket(self):
        assert load(S3_BUCKET="my.media-2026").s3_bucket == "my.media-2026"

    def test_s3_region(self):
        assert load(S3_REGION="eu-west-1").s3_region == "eu-west-1"

    def test_aws_default_region(self):
        assert load(AWS_DEFAULT_REGION="ap-south-1").s3_region == "ap-south-1"

    def test_s3_region_beats_aws_default_region(self):
        assert load(S3_REGION="eu-west-1", AWS_DEFAULT_REGION="ap-south-1").s3_region == "eu-west-1"

    def test_endpoint_url_trailing_slash_dropped(self):
        assert load(S3_ENDPOINT_URL="http://127.0.0.1:9000/").s3_endpoint_url == "http://127.0.0.1:9000"

    def test_public_endpoint_url(self):
        settings = load(S3_ENDPOINT_URL="http://minio:9000", S3_PUBLIC_ENDPOINT_URL="https://media.example.com")
        assert settings.s3_public_endpoint_url == "https://media.example.com"

    def test_signing_uses_public_endpoint(self):
        settings = load(S3_ENDPOINT_URL="http://minio:9000", S3_PUBLIC_ENDPOINT_URL="https://media.example.com")
        assert settings.signing_endpoint_url == "https://media.example.com"

    def test_signing_falls_back_to_endpoint(self):
        assert load(S3_ENDPOINT_URL="http://minio:9000").signing_endpoint_url == "http://minio:9000"

    @pytest.mark.parametrize("style", ["auto", "path", "virtual", "PATH"])
    def test_addressing_styles(self, style):
        assert load(S3_ADDRESSING_STYLE=style).s3_addressing_style == style.lower()

    def test_media_route(self):
        assert load(MEDIA_ROUTE="/files/private").media_route == "/files/private"

    def test_media_route_trailing_slash_dropped(self):
        assert load(MEDIA_ROUTE="/files/").media_route == "/files"

    def test_media_prefix(self):
        assert load(MEDIA_PREFIX="uploads/2026/").media_prefix == "uploads/2026/"

    def test_media_prefix_empty_means_whole_bucket(self):
        assert load(MEDIA_PREFIX="").media_prefix == ""

    @pytest.mark.parametrize("ttl", ["1", "60", "604800"])
    def test_media_url_ttl_bounds(self, ttl):
        assert load(MEDIA_URL_TTL=ttl).media_url_ttl == int(ttl)

    def test_one_session_secret(self):
        assert load().session_secrets == (KEY_A.encode(),)

    def test_session_secrets_keep_order(self):
        assert load(SESSION_SECRET=f"{KEY_A},{KEY_B}").session_secrets == (KEY_A.encode(), KEY_B.encode())

    def test_session_secrets_spaces_ignored(self):
        assert load(SESSION_SECRET=f" {KEY_B} , {KEY_A} ,").session_secrets == (KEY_B.encode(), KEY_A.encode())

    def test_cookie_name(self):
        assert load(SESSION_COOKIE_NAME="__Host-media").session_cookie_name == "__Host-media"

    def test_session_max_age(self):
        assert load(SESSION_MAX_AGE="3600").session_max_age == 3600

    @pytest.mark.parametrize(
        "url", ["/accounts/login/", "/login?service=media", "https://www.example.com/login", "http://127.0.0.1:8000/in"]
    )
    def test_login_url(self, url):
        assert load(LOGIN_URL=url).login_url == url

    def test_upload_max_bytes(self):
        assert load(UPLOAD_MAX_BYTES="1048576").upload_max_bytes == 1048576

    def test_upload_content_types(self):
        settings = load(UPLOAD_CONTENT_TYPES="Image/*, application/pdf")
        assert settings.upload_content_types == ("image/*", "application/pdf")

    def test_forwarded_allow_ips_list(self):
        settings = load(FORWARDED_ALLOW_IPS="10.0.0.0/8, 192.168.1.7, ::1")
        expected = tuple(ipaddress.ip_network(value) for value in ("10.0.0.0/8", "192.168.1.7/32", "::1/128"))
        assert settings.forwarded_allow_ips == expected

    def test_forwarded_allow_ips_star_trusts_all(self):
        assert load(FORWARDED_ALLOW_IPS="*").forwarded_allow_ips is None

    @pytest.mark.parametrize("size", ["0", "100"])
    def test_statement_cache_size(self, size):
        assert load(DATABASE_STATEMENT_CACHE_SIZE=size).database_statement_cache_size == int(size)

    @pytest.mark.parametrize("level", ["DEBUG", "info", "Warning", "ERROR", "CRITICAL"])
    def test_log_level(self, level):
        assert load(LOG_LEVEL=level).log_level == level.upper()

    def test_blank_value_means_default(self):
        assert load(MEDIA_URL_TTL="  ").media_url_ttl == 3600

    def test_surrounding_spaces_trimmed(self):
        assert load(S3_BUCKET="  media-bucket ").s3_bucket == "media-bucket"

    def test_settings_are_frozen(self):
        settings = load()
        with pytest.raises(AttributeError):
            settings.port = 1


INVALID = [
    ("PORT", "0"),
    ("PORT", "65536"),
    ("PORT", "http"),
    ("DATABASE_URL", "mysql://u:p@h/d"),
    ("DATABASE_URL", "db.internal:5432"),
    ("DATABASE_STATEMENT_CACHE_SIZE", "-1"),
    ("DATABASE_STATEMENT_CACHE_SIZE", "many"),
    ("S3_BUCKET", "Media_Bucket"),
    ("S3_BUCKET", "ab"),
    ("S3_BUCKET", "media..bucket"),
    ("S3_REGION", "EU West 1"),
    ("AWS_DEFAULT_REGION", "eu_west_1"),
    ("S3_ENDPOINT_URL", "ftp://127.0.0.1:9000"),
    ("S3_ENDPOINT_URL", "127.0.0.1:9000"),
    ("S3_ENDPOINT_URL", "http://"),
    ("S3_ENDPOINT_URL", "http://minio:9000/bucket"),
    ("S3_ENDPOINT_URL", "http://minio:9000?x=1"),
    ("S3_PUBLIC_ENDPOINT_URL", "media.example.com"),
    ("S3_PUBLIC_ENDPOINT_URL", "https://media.example.com/path"),
    ("S3_ADDRESSING_STYLE", "dns"),
    ("MEDIA_ROUTE", "media"),
    ("MEDIA_ROUTE", "/"),
    ("MEDIA_ROUTE", "//media"),
    ("MEDIA_ROUTE", "/me dia"),
    ("MEDIA_ROUTE", "/media/{key}"),
    ("MEDIA_PREFIX", "/media/"),
    ("MEDIA_PREFIX", "media\n/"),
    ("MEDIA_URL_TTL", "0"),
    ("MEDIA_URL_TTL", "604801"),
    ("MEDIA_URL_TTL", "-5"),
    ("MEDIA_URL_TTL", "1.5"),
    ("MEDIA_URL_TTL", "1h"),
    ("SESSION_SECRET", "not-a-fernet-key"),
    ("SESSION_COOKIE_NAME", "my cookie"),
    ("SESSION_COOKIE_NAME", "a;b"),
    ("SESSION_COOKIE_NAME", "a=b"),
    ("SESSION_MAX_AGE", "0"),
    ("SESSION_MAX_AGE", "two weeks"),
    ("LOGIN_URL", "//evil.example"),
    ("LOGIN_URL", "//evil.example/login"),
    ("LOGIN_URL", "/\\evil.example"),
    ("LOGIN_URL", "/login\r\nSet-Cookie: a=b"),
    ("LOGIN_URL", "/log in"),
    ("LOGIN_URL", "javascript:alert(1)"),
    ("LOGIN_URL", "login"),
    ("LOGIN_URL", "https:///login"),
    ("LOGIN_URL", "/login#top"),
    ("UPLOAD_MAX_BYTES", "0"),
    ("UPLOAD_MAX_BYTES", "10MB"),
    ("UPLOAD_CONTENT_TYPES", "image"),
    ("UPLOAD_CONTENT_TYPES", "image/png;charset=x"),
    ("FORWARDED_ALLOW_IPS", "localhost"),
    ("FORWARDED_ALLOW_IPS", "10.0.0.0/33"),
    ("FORWARDED_ALLOW_IPS", "127.0.0.1,proxy"),
    ("LOG_LEVEL", "verbose"),
    ("LOG_LEVEL", "TRACE"),
]


@pytest.mark.parametrize(("variable", "value"), INVALID, ids=[f"{name}={value!r}" for name, value in INVALID])
class TestInvalid:
    def test_raises_config_error_naming_variable(self, variable, value):
        assert config_error(**{variable: value}).variable == variable

    def test_message_starts_with_variable(self, variable, value):
        assert str(config_error(**{variable: value})).startswith(f"{variable}: ")

    def test_message_is_one_line(self, variable, value):
        assert "\n" not in str(config_error(**{variable: value}))


@pytest.mark.parametrize("variable", SERVE_REQUIRES)
def test_missing_required_variable_named(variable):
    environ = {name: value for name, value in MINIMAL.items() if name != variable}

    with pytest.raises(ConfigError) as caught:
        load_settings(environ, require=SERVE_REQUIRES)

    assert caught.value.variable == variable


@pytest.mark.parametrize("variable", SERVE_REQUIRES)
def test_blank_required_variable_is_missing(variable):
    with pytest.raises(ConfigError) as caught:
        load_settings({**MINIMAL, variable: " "}, require=SERVE_REQUIRES)

    assert caught.value.variable == variable


def test_nothing_required_by_default():
    assert load_settings({}).database_url is None


def test_missing_secret_message_points_to_keygen():
    with pytest.raises(ConfigError) as caught:
        load_settings({}, require=("SESSION_SECRET",))

    assert "media-gateway keygen" in str(caught.value)


class TestFernetKeyNotEchoed:
    """The value of SESSION_SECRET is a credential, so no error message may contain it."""

    def test_malformed_key_not_in_message(self):
        malformed = KEY_A[:-2] + "!!"

        assert malformed not in str(config_error(SESSION_SECRET=malformed))

    def test_short_key_not_in_message(self):
        short = KEY_A[:20]

        assert short not in str(config_error(SESSION_SECRET=short))

    def test_valid_first_key_not_in_message(self):
        message = str(config_error(SESSION_SECRET=f"{KEY_A},{KEY_B[:30]}"))

        assert KEY_A not in message

    def test_malformed_second_key_not_in_message(self):
        bad = KEY_B[:30]

        assert bad not in str(config_error(SESSION_SECRET=f"{KEY_A},{bad}"))

    def test_message_names_key_position(self):
        assert "key 2 of 2" in str(config_error(SESSION_SECRET=f"{KEY_A},{KEY_B[:30]}"))


def test_settings_repr_hides_secrets():
    secret = Fernet.generate_key().decode()
    settings = load_settings(
        {
            "DATABASE_URL": "postgres://gateway:db-password@db.internal/media",
            "SESSION_SECRET": secret,
            "DJANGO_SECRET_KEY": "django-insecure-secret",
        }
    )
    text = repr(settings)

    assert "db-password" not in text
    assert secret not in text
    assert "django-insecure-secret" not in text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "postgres://gateway:db-password@[::1/media"),
        ("DATABASE_URL", "postgres://gateway:db-password@127.0.0.1:99999/media"),
        ("DATABASE_URL", "postgres://gateway:db-password@127.0.0.1:abc/media"),
        ("S3_ENDPOINT_URL", "http://[::1"),
        ("S3_PUBLIC_ENDPOINT_URL", "http://[zz]"),
        ("LOGIN_URL", "http://[::1/login"),
    ],
)
def test_malformed_url_names_variable(variable, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: value})

    assert raised.value.variable == variable
    assert "db-password" not in str(raised.value)
