from __future__ import annotations

import pytest
from django.db import connection
from django.test import override_settings

from bots.models import ExchangeAccount
from tests.factories import ExchangeAccountFactory

pytestmark = pytest.mark.django_db

KEY = "vmPO5zJ3mDsJ9vV8mwqvUYZ0H6pV1xO8c5dAKDy1nSYdTzWcDnDWcQ0EvnzpUqFZ"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


def raw_columns(account_id: int) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT api_key, api_secret FROM bots_exchangeaccount WHERE id = %s", [account_id]
        )
        return cursor.fetchone()


def test_api_keys_round_trip_and_are_never_stored_in_plain_text():
    account = ExchangeAccountFactory(exchange="binance", api_key=KEY, api_secret=SECRET)

    stored_key, stored_secret = raw_columns(account.pk)
    assert KEY not in stored_key and SECRET not in stored_secret
    assert KEY[:12] not in stored_key

    reloaded = ExchangeAccount.objects.get(pk=account.pk)
    assert (reloaded.api_key, reloaded.api_secret) == (KEY, SECRET)


def test_the_same_key_encrypts_differently_each_time():
    first = ExchangeAccountFactory(api_key=KEY)
    second = ExchangeAccountFactory(api_key=KEY)
    assert raw_columns(first.pk)[0] != raw_columns(second.pk)[0]


def test_a_wrong_encryption_key_fails_clearly_instead_of_returning_garbage():
    account = ExchangeAccountFactory(api_key=KEY)
    other_key = "Xh0bJ6cGdQdYd6m1dq0oG3bYk3lB8C2HkUoqgR9V6nE="
    with (
        override_settings(FIELD_ENCRYPTION_KEY=other_key),
        pytest.raises(ValueError, match="cannot decrypt"),
    ):
        ExchangeAccount.objects.get(pk=account.pk)
