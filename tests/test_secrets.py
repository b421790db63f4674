from __future__ import annotations

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
    assert sorted(secret_strings(secret)) == ["k", "p", "u"]
