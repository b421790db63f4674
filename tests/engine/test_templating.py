from __future__ import annotations

import time

import pytest

from ipaas.engine.templating import (
    DEFAULT_TIMEOUT_S,
    MAX_RENDERED_CHARS,
    TemplateRenderError,
    check_syntax,
    render,
)

CTX = {
    "trigger": {"body": {"order": {"id": 7, "items": [1, 2]}, "items": "field"}, "query": {}},
    "steps": {"weather": {"output": {"main": {"temp": 21.5}}}},
}


class TestRender:
    def test_text_and_native_values(self) -> None:
        rendered = render(
            {
                "text": "Order {{ trigger.body.order.id }}: {{ steps.weather.output.main.temp }}",
                "items": "{{ trigger.body.order['items'] }}",
                "number": "{{ trigger.body.order.id }}",
                "plain": "no template",
                "nested": [{"x": "{{ trigger.body.order.id + 1 }}"}],
            },
            CTX,
        )
        assert rendered == {
            "text": "Order 7: 21.5",
            "items": [1, 2],
            "number": 7,
            "plain": "no template",
            "nested": [{"x": 8}],
        }

    def test_payload_keys_win_over_dict_methods(self) -> None:
        assert render("{{ trigger.body.items }}", CTX) == "field"

    def test_missing_values_render_empty(self) -> None:
        assert render("a{{ trigger.body.nope }}b", CTX) == "ab"
        assert render("{{ trigger.body.nope }}", CTX) is None

    @pytest.mark.parametrize(
        "source",
        [
            "{{ trigger.__class__.__mro__ }}",
            "{{ ''.__class__.__subclasses__() }}",
            "{{ trigger.body.order.update({'id': 1}) }}",
        ],
    )
    def test_sandbox_escapes_fail(self, source: str) -> None:
        with pytest.raises(TemplateRenderError):
            render({"text": source}, CTX)

    def test_huge_range_fails_fast(self) -> None:
        with pytest.raises(TemplateRenderError, match="range"):
            render("{% for i in range(10**9) %}{% endfor %}", CTX)

    def test_huge_output_fails(self) -> None:
        with pytest.raises(TemplateRenderError, match="exceeds"):
            render("{{ 'x' * " + str(MAX_RENDERED_CHARS + 1) + " }}x", CTX)

    def test_errors_name_the_field(self) -> None:
        with pytest.raises(TemplateRenderError, match=r"config\.blocks\[1\]"):
            render({"blocks": ["ok", "{{ 1 / 0 }}"]}, CTX)


def test_check_syntax_reports_paths() -> None:
    assert check_syntax({"a": "{{ fine }}", "b": ["{{ broken"]}) == [
        ("config.b[0]", check_syntax("{{ broken")[0][1])
    ]


#: Hostile templates and the error each must fail with: quickly, without a big allocation.
HOSTILE = [
    ("{% for i in range(10**9) %}{% endfor %}", "range of 1000000000 items exceeds"),
    ("{{ 'a' * 10**9 }}", "repetition of 1000000000"),
    ("x{{ 'a' * 10**9 }}", "repetition of 1000000000"),
    ("{{ [1] * 10**9 }}", "repetition of 1000000000"),
    ("{{ 10 ** 100000 }}", "power is a number of about"),
    ("{{ '%999999999s' % 'a' }}", "% format width of 999999999"),
    ("{{ '%*d' % (999999999, 1) }}", "'\\*' width in % formatting"),
    ("{{ '%s%s' % (trigger.body.big, trigger.body.big) }}", "formatted text of 2000000"),
    ("{{ '%999999999s'|format('a') }}", "% format width of 999999999"),
    ("{{ '{:>999999999}'.format(1) }}", "format width of 999999999"),
    ("{{ '{:{w}}'.format(1, w=999999999) }}", "nested fields in a format spec"),
    (
        "{% for a in range(9999) %}{% for b in range(9999) %}x{% endfor %}{% endfor %}",
        "loops ran over 1000000 iterations",
    ),
    (
        "{% for a in range(9999) %}{% for b in range(9999) %}{% endfor %}{% endfor %}",
        "loops ran over 1000000 iterations",
    ),
    (
        "{% for a in trigger.body.big %}{% for b in trigger.body.big %}{% endfor %}{% endfor %}",
        "loops ran over 1000000 iterations",
    ),
    ("{% for i in range(9999) %}" + "y" * 1000 + "{% endfor %}", "output of over 1048576"),
    (
        "{% set s %}{% for i in range(9999) %}{{ trigger.body.big }}{% endfor %}{% endset %}",
        "output of over 1048576",
    ),
    ("{{ ''.__class__.__mro__ }}", "attribute '__class__' of a str is not allowed"),
    ("{{ ''.__class__ }}", "attribute '__class__' of a str is not allowed"),
    ("x{{ trigger.__class__ }}", "attribute '__class__' of a dict is not allowed"),
    ("{{ range.__init__.__globals__ }}", "attribute '__init__' of a function"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "macro calls nested over 64"),
    (
        "{% macro f(n) %}{% if n %}{% set s = f(n-1) %}{{ s ~ s }}{% else %}x{% endif %}"
        "{% endmacro %}{{ f(40)|length }}",
        "output of over 1048576",
    ),
    ("{% for x in [1] recursive %}{{ loop([1, 1]) }}{% endfor %}", "RecursionError"),
    ("{{ range(9999)|join(trigger.body.big) }}", "result of join of 9998"),
    ("{{ trigger.body.big.join(range(9999)|map('string')) }}", "result of join\\(\\) of"),
    ("{{ ([trigger.body.big] * 9999)|map('upper')|join }}", "join input of 2000000"),
    ("{{ ([trigger.body.big] * 9999)|map('upper')|list|length }}", "built over 33554432"),
    ("{{ 'a'|center(999999999) }}", "center argument of 999999999"),
    ("{{ trigger.body.big|indent(trigger.body.big) }}", "result of indent of"),
    ("{{ trigger.body.big|replace('', trigger.body.big) }}", "result of replace of"),
    ("{{ trigger.body.big.replace('a', trigger.body.big) }}", "result of replace\\(\\) of"),
    ("{{ 'a'.zfill(999999999) }}", "zfill\\(\\) argument of 999999999"),
    ("{{ [1]|batch(999999999, 'x')|list }}", "batch argument of 999999999"),
    ("{{ trigger.body.order|tojson(indent=999999) }}", "tojson indent over 16"),
]
BIG_CTX = {
    **CTX,
    "trigger": {**CTX["trigger"], "body": {**CTX["trigger"]["body"], "big": "ab" * 500_000}},
}  # type: ignore[dict-item]


class TestLimits:
    @pytest.mark.parametrize(("source", "message"), HOSTILE)
    def test_hostile_templates_fail_fast(self, source: str, message: str) -> None:
        started = time.monotonic()
        with pytest.raises(TemplateRenderError, match=message):
            render({"text": source}, BIG_CTX)
        assert time.monotonic() - started < DEFAULT_TIMEOUT_S + 0.5

    def test_a_slow_render_fails_at_its_budget(self) -> None:
        doubling = (
            "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}{% endif %}"
            "{% endmacro %}{{ f(40) }}"
        )
        started = time.monotonic()
        with pytest.raises(TemplateRenderError, match=r"config\.text: .*longer than 0\.2 s"):
            render({"text": doubling}, CTX, timeout_s=0.2)
        assert time.monotonic() - started < 0.6

    def test_the_budget_covers_the_whole_config(self) -> None:
        loop = "{% for a in range(3000) %}{% for b in range(100) %}{% endfor %}{% endfor %}"
        # The iteration budget is what is shown here: a generous clock, so a busy machine
        # does not hit the time budget first.
        with pytest.raises(TemplateRenderError, match=r"config\.d: .*1000000 iterations"):
            render({"a": loop, "b": loop, "c": loop, "d": loop}, CTX, timeout_s=60)

    def test_ordinary_templates_are_unchanged(self) -> None:
        source = (
            "{% for i in trigger.body.order['items'] %}{{ loop.index }}/{{ loop.length }}"
            "{% if not loop.last %},{% endif %}{% endfor %} "
            "{{ ['a', 'b']|join('-') }} {{ '%05.1f'|format(3.14159) }} {{ '{:>4}'.format(7) }} "
            "{{ 'x' * 3 }} {{ 2 ** 10 }} {{ 'ab'|replace('a', 'c') }} {{ '-'.join(['p', 'q']) }}"
            "{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(1) }} {{ 'a'|center(5) }}|"
        )
        assert render(source, CTX) == "1/2,2/2 a-b 003.1    7 xxx 1024 cb p-q<1>   a  |"
