from __future__ import annotations

import pytest

from ipaas.engine.templating import (
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
