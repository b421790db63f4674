from __future__ import annotations

import base64

from ipaas.kit.secrets import MASK, Redactor, Secret, mask_url

HOOK = "https://hooks.slack.com/services/T000/B000/XXXXsecret"


class TestMaskUrl:
    def test_whole_url_secret_hides_the_path(self) -> None:
        assert mask_url(HOOK, Redactor([HOOK])) == "https://hooks.slack.com/***"

    def test_secret_in_query_keeps_the_path(self) -> None:
        url = "https://api.example.com/data/2.5/weather?q=Berlin&appid=k3y-secret"
        assert (
            mask_url(url, Redactor(["k3y-secret"]))
            == "https://api.example.com/data/2.5/weather?q=Berlin&appid=***"
        )

    def test_secret_inside_the_path_is_replaced(self) -> None:
        url = "https://discord.com/api/webhooks/1/t0ken-secret"
        assert mask_url(url, Redactor(["t0ken-secret"])) == "https://discord.com/api/webhooks/1/***"

    def test_sensitive_query_names_are_masked_without_known_secrets(self) -> None:
        assert mask_url("http://x.test/a?token=abc&b=2", Redactor()) == (
            "http://x.test/a?token=***&b=2"
        )


class TestRedactor:
    def test_nested_values_and_sensitive_keys(self) -> None:
        redact = Redactor(["s3cret-value"])
        assert redact(
            {"a": ["x s3cret-value y"], "Authorization": "Bearer abc", "password": "p"}
        ) == {"a": [f"x {MASK} y"], "Authorization": MASK, "password": MASK}

    def test_short_secrets_are_not_scrubbed_from_text(self) -> None:
        assert Redactor(["ab"]).text("about") == "about"


def test_secret_repr_is_masked() -> None:
    secret = Secret("hunter22")
    assert "hunter22" not in repr(secret)
    assert "hunter22" not in str(secret)
    assert secret.get() == "hunter22"


def test_secret_strings_skip_base_urls() -> None:
    from ipaas.kit.secrets import secret_strings

    secret = {
        "base_url": "https://api.example.com",
        "headers": {"X-Key": "k"},
        "basic": {"username": "u", "password": "p"},
    }
    # The Basic token the connector sends is scrubbed too (a remote may echo it back).
    assert sorted(secret_strings(secret)) == ["dTpw", "k", "p", "u"]


def test_a_base_url_gives_only_its_password() -> None:
    from ipaas.kit.secrets import secret_strings

    secret = {"base_url": "https://bob:S3CRET%21pw@api.example.com/v1"}
    # The password as written and decoded, and the Basic token the HTTP client makes of it.
    token = base64.b64encode(b"bob:S3CRET!pw").decode()
    assert sorted(secret_strings(secret)) == sorted(["S3CRET%21pw", "S3CRET!pw", token])
    assert secret_strings({"base_url": "https://api.example.com/v1"}) == []
    assert secret_strings({"base_url": "https://[bad@x"}) == []


def test_urls_are_shown_without_their_password() -> None:
    from ipaas.kit.secrets import Redactor, mask_url

    shown = mask_url("https://bob:S3CRETpw@api.example.com/v1/x?q=1", Redactor())
    assert shown == "https://bob:***@api.example.com/v1/x?q=1"
    assert mask_url("https://bob@api.example.com/", Redactor()) == "https://bob@api.example.com/"
