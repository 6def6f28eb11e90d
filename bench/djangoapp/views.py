import os

import boto3
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpResponseForbidden, HttpResponseRedirect
from django.utils import timezone

from .models import MediaGrant, MediaObject

_s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["S3_ENDPOINT_URL"],
    region_name="us-east-1",
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
)


@login_required
def media(request, key):
    user_id = request.user.username
    media_object = MediaObject.objects.filter(key=key, status="ready").first()
    if media_object is None:
        return HttpResponseForbidden()

    allowed = media_object.visibility == "public" or media_object.owner_id == user_id
    if not allowed:
        allowed = MediaGrant.objects.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()), key=key, grantee_id=user_id
        ).exists()
    if not allowed:
        return HttpResponseForbidden()

    url = _s3.generate_presigned_url(
        "get_object", Params={"Bucket": os.environ["S3_BUCKET"], "Key": "media/" + key}, ExpiresIn=3600
    )
    return HttpResponseRedirect(url)
