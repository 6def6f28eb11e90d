from django.db import models


class MediaObject(models.Model):
    key = models.TextField(primary_key=True)
    owner_id = models.TextField()
    visibility = models.TextField()
    status = models.TextField()

    class Meta:
        managed = False
        db_table = "media_objects"


class MediaGrant(models.Model):
    pk = models.CompositePrimaryKey("key", "grantee_id")
    key = models.TextField()
    grantee_id = models.TextField()
    expires_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "media_grants"
