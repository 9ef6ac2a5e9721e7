"""Create or reset demo users: ``manage.py demo_users admin=pass alice=pass``.

The first name given becomes a superuser; the others are app owners."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create or reset demo users (the first one is a superuser)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("users", nargs="+", help="name=password pairs")

    def handle(self, *args, users: list[str], **options) -> None:
        User = get_user_model()
        for index, pair in enumerate(users):
            name, sep, password = pair.partition("=")
            if not sep or not name or not password:
                raise CommandError(f"expected name=password, got {pair!r}")
            user, _ = User.objects.get_or_create(username=name)
            user.set_password(password)
            if index == 0:
                user.is_staff = user.is_superuser = True
            user.save()
            self.stdout.write(f"user {name}{' (admin)' if index == 0 else ''} ready")
