"""Create Django users and sessions for the benchmark; writes wrk request lines (path TAB Cookie header)."""

import sys
from urllib.parse import quote

import django

django.setup()

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402


def main(users: int, objects_per_user: int, output: str) -> None:
    User.objects.all().delete()
    created = User.objects.bulk_create(User(username=f"user-{number}", password="!") for number in range(users))

    lines = []
    for number, user in enumerate(created):
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        for object_number in range(objects_per_user):
            path = "/media/" + quote(f"user-{number}/photo {object_number}.jpg")
            lines.append(f"{path}\tCookie: sessionid={session.session_key}")

    with open(output, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
