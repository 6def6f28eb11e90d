from django.http import HttpResponse
from django.urls import path

from .views import media

urlpatterns = [
    path("", lambda request: HttpResponse("ok")),
    path("media/<path:key>", media),
]
