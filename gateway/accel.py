"""The X-Accel-Redirect hand-off: the gateway decides, nginx fetches the file from S3."""

from .s3 import SignedUrl

# nginx's internal location reads the presigned URL from this header, and deploy/nginx.conf keeps it from clients.
MEDIA_URL_HEADER = "X-Media-Url"


def accel_redirect_headers(signed: SignedUrl, location: str) -> dict[str, str]:
    """Return the headers that send nginx to `location` to fetch `signed` from S3 itself."""
    return {"X-Accel-Redirect": location, MEDIA_URL_HEADER: signed.url}
