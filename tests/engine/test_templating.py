from __future__ import annotations

import gc
import time
from datetime import UTC, datetime

import pytest

from ipaas.engine.connectors.base import Endpoints
from ipaas.engine.steps import StepsRun, execution_context
from ipaas.engine.templating import (
    BURST_S,
    DEFAULT_TENANT_SHARE,
    DEFAULT_TIMEOUT_S,
    MAX_RENDERED_CHARS,
    RenderShareSpent,
    TemplateRenderer,
    TemplateRenderError,
    check_references,
    check_syntax,
    render,
)
from ipaas.executions.models import TriggerData
from ipaas.workflows.models import Trigger, WorkflowDefinition

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

    @pytest.mark.parametrize(
        ("source", "text"),
        [
            # Python's str wrote {'id': 7, 'paid': True, 'note': None} and "n=None".
            (
                "Order: {{ trigger.body.order }}",
                'Order: {"id": 7, "items": [1, 2], "paid": true, "note": null, "to": "Zoë"}',
            ),
            ("items={{ trigger.body.order['items'] }}", "items=[1, 2]"),
            ("paid={{ trigger.body.order.paid }}", "paid=true"),
            ("unpaid={{ not trigger.body.order.paid }}", "unpaid=false"),
            ("note={{ trigger.body.order.note }}.", "note=."),
            ("temp={{ steps.weather.output.main.temp }}", "temp=21.5"),
            # A filter the template asks for still has its say.
            ("{{ trigger.body.order.paid | string }}", "True"),
        ],
    )
    def test_values_in_text_are_written_as_json_writes_them(self, source: str, text: str) -> None:
        order = {"id": 7, "items": [1, 2], "paid": True, "note": None, "to": "Zoë"}
        ctx = CTX | {"trigger": {"body": {"order": order}}}
        assert render(source, ctx) == text

    def test_execution_is_the_same_in_every_attempt(self) -> None:
        at = datetime(2026, 12, 7, 3, 4, 5, 678000, tzinfo=UTC)
        run = StepsRun(
            tenant_id="tn_1",
            execution_id="ex_1",
            workflow_id="wf_1",
            created_at=at,
            definition=WorkflowDefinition(trigger=Trigger(), steps=[]),
            trigger=TriggerData(),
            secrets={},
            http=None,  # type: ignore[arg-type]
            endpoints=Endpoints(),
        )
        ctx = CTX | {"execution": execution_context(run)}
        assert render("{{ execution.id }}-notify", ctx) == "ex_1-notify"
        assert render("{{ execution.workflow_id }}", ctx) == "wf_1"
        assert render("{{ execution.created_at }}", ctx) == "2026-12-07T03:04:05.678000Z"

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

    @pytest.mark.parametrize(
        "source",
        [
            "hi {{ '\\ud800' }}",
            "{{ '%c' % 55296 }}",
            "{{ ['ok', '\\udfff'] }}",
            "{{ {'\\ud800': 1} }}",
            "{{ ('\\ud800',) }}",
        ],
    )
    def test_lone_surrogates_fail(self, source: str) -> None:
        """Not Unicode text: no JSON, database or remote takes it (found by hand: the call
        went out, then the step's record could not be stored)."""
        with pytest.raises(TemplateRenderError, match=r"config\.v: .*lone surrogate"):
            render({"v": source}, CTX)
        # Text that is not ASCII, and values passed through, are untouched.
        assert render({"v": "é {{ trigger.body.order.id }} ü"}, CTX) == {"v": "é 7 ü"}
        assert render("{{ trigger.body }}", CTX) == CTX["trigger"]["body"]

    def test_a_template_too_complex_to_compile_fails_the_render(self) -> None:
        """One saved before the API refused it: the step fails, the worker does not crash
        (Python's SyntaxError was not among the errors a render turned into a step's)."""
        nested = "{% for i in [1] %}" * 30 + "x" + "{% endfor %}" * 30
        with pytest.raises(TemplateRenderError, match=r"config\.v: .*too deeply nested"):
            render({"v": nested}, CTX)

    def test_errors_name_the_field(self) -> None:
        with pytest.raises(TemplateRenderError, match=r"config\.blocks\[1\]"):
            render({"blocks": ["ok", "{{ 1 / 0 }}"]}, CTX)


def test_check_syntax_reports_paths() -> None:
    assert check_syntax({"a": "{{ fine }}", "b": ["{{ broken"]}) == [
        ("config.b[0]", check_syntax("{{ broken")[0][1])
    ]


#: Templates that name what no execution has, each with what the check says.
MISNAMED = [
    (
        "Hi {{ trigerr.body.name }}",
        "unknown name 'trigerr': a template sees trigger, steps and execution",
    ),
    ("{{ execution.idd }}", "execution has no 'idd' (it has created_at, id, workflow_id)"),
    ("{{ bdy }}", "unknown name 'bdy'"),
    ("{{ trigger.bdy.name }}", "trigger has no 'bdy' (it has body, content_type, headers"),
    ("{{ trigger['qeury'] }}", "trigger has no 'qeury'"),
    ("{{ steps.notfy.output }}", "no step 'notfy' before this one (before it: first)"),
    ("{{ steps['later'].output }}", "steps.later runs after this step"),
    ("{{ steps.first.outptu.ok }}", "steps.first has no 'outptu' (it has output and status)"),
    ("{{ (steps.first['result']) | tojson }}", "steps.first has no 'result'"),
    ("{% if steps.notfy.status == 'failed' %}x{% endif %}", "no step 'notfy'"),
]

#: What a template may do with the same names: none of these is reported.
WELL_NAMED = [
    "{{ trigger.body.order.id }} {{ trigger.headers['x-id'] }} {{ trigger.query.page }}",
    "{{ trigger.method }} {{ trigger.type }} {{ trigger.content_type }}",
    "{{ steps.first.output.main.temp }} {{ steps['first'].status }}",
    "{{ trigger.body.steps.anything }} {{ steps.first.output.trigger.anything }}",
    "{{ steps.get('first') }} {{ trigger.items() | list }} {{ steps[trigger.body.key] }}",
    "{% for id, step in steps.items() %}{{ id }}: {{ step.output }}{% endfor %}",
    "{% for i in range(3) %}{{ loop.index }}{% endfor %}{% set n = 2 %}{{ n }}",
    "{% macro line(v) %}- {{ v }}{% endmacro %}{{ line(trigger.body) }}",
    "{% if trigger.body %}{% set s = trigger.body %}{{ s }}{% endif %}",
    "{% set steps = {'x': 1} %}{{ steps.x }}",
    "{{ execution.id }}-notify {{ execution['workflow_id'] }} {{ execution.created_at }}",
    "no template at all",
]


@pytest.mark.parametrize(("source", "says"), MISNAMED)
def test_check_references_names_what_no_execution_has(source: str, says: str) -> None:
    config = {"text": "fine", "blocks": [{"text": source}]}
    found = check_references(config, before=["first"], after=["later"])
    assert len(found) == 1, found
    assert found[0][0] == "config.blocks[0].text"
    assert says in found[0][1]


def test_a_misnamed_lookup_renders_as_nothing_or_fails_each_run() -> None:
    """Why the check is at save: one level deep, a misnamed lookup renders as nothing (a
    payload's optional field may be missing, so Undefined is not an error); deeper, every
    execution fails at that step."""
    context = {"trigger": {"body": {}, "headers": {}}, "steps": {"first": {"output": {}}}}
    assert render("Hi {{ steps.first.outptu }}!", context) == "Hi !"
    assert render("{{ trigger.bdy }}", context) is None
    with pytest.raises(TemplateRenderError, match="has no attribute 'notfy'"):
        render("{{ steps.notfy.output }}", context)


@pytest.mark.parametrize("source", WELL_NAMED)
def test_check_references_leaves_what_an_execution_may_have(source: str) -> None:
    assert check_references({"text": source}, before=["first"], after=["later"]) == []


def test_check_references_leaves_a_template_that_does_not_compile_to_check_syntax() -> None:
    assert check_references("{{ broken", before=[], after=[]) == []


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
    # (``trigger.__class__`` is refused when saved: ``check_references``.)
    ("x{{ trigger.body.__class__ }}", "attribute '__class__' of a dict is not allowed"),
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
        # The render's own work is measured (CPU time, with the collector off): a pause of
        # the whole process (a collection of the test run's heap, the host taking the core)
        # is not the sandbox's and made the wall-clock version fail on a slow machine
        # (0.78 s in make test, 0.20 s alone).
        gc.disable()
        try:
            started = time.process_time()
            with pytest.raises(TemplateRenderError, match=r"config\.text: .*longer than 0\.2 s"):
                render({"text": doubling}, CTX, timeout_s=0.2)
            worked = time.process_time() - started
        finally:
            gc.enable()
        assert worked < 0.6

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


class _Clock:
    """``time.monotonic`` plus time that templates "spend" through ``spend(s)``: the renderer
    sees that render time pass while the render's own deadline (real time) does not."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def spend(self, seconds: float) -> str:
        self.offset += seconds
        return "spent"


class TestTenantShare:
    """``TemplateRenderer``: one tenant's renders take at most their share of the process."""

    def test_cheap_renders_never_wait(self) -> None:
        """A busy tenant (a render every 5 ms: 200 executions a second) at the default share.
        Its renders take tens of microseconds against the 500 us it earns between two.
        (Back to back, with nothing else between them, any renders add up to a burst; how
        many depends on the machine's speed.)"""
        clock = _Clock()
        renderer = TemplateRenderer(clock=clock)
        assert renderer.tenant_share == DEFAULT_TENANT_SHARE == 0.1
        config = {"text": "order {{ trigger.body.order.id }}: {{ trigger.body.items|upper }}"}
        for _ in range(2_000):
            assert renderer.render("tn_a", config, CTX) == {"text": "order 7: FIELD"}
            clock.offset += 0.005
        assert renderer.wait_s("tn_a") == 0.0

    def test_a_tenant_that_took_its_share_waits_until_it_is_whole_and_others_do_not(
        self,
    ) -> None:
        clock = _Clock()
        renderer = TemplateRenderer(timeout_s=1.0, tenant_share=0.1, clock=clock)
        assert renderer.burst_s == BURST_S == 0.25
        context = {**CTX, "spend": clock.spend}
        started = time.monotonic()
        assert renderer.render("tn_a", {"x": "{{ spend(0.2) }}"}, context) == {"x": "spent"}
        # Under a burst: the next render runs (and may take the whole timeout).
        assert renderer.render("tn_a", {"x": "{{ spend(0.1) }}"}, context) == {"x": "spent"}
        with pytest.raises(RenderShareSpent, match="IPAAS_TEMPLATE_TENANT_SHARE") as spent:
            renderer.render("tn_a", {"x": "{{ trigger.body.order.id }}"}, CTX)
        real_s = time.monotonic() - started
        # Until it owes nothing: 0.3 s less what 0.1 s paid back, plus the renders' own real
        # time (each compiles its template: milliseconds on a slow machine), paid back at
        # 0.1 s per second.
        assert 2.9 < spent.value.wait_s < 3.0 + real_s / 0.1 + 0.05
        assert renderer.render("tn_b", {"x": "{{ trigger.body.order.id }}"}, CTX) == {"x": 7}
        clock.offset += 1.5  # half paid back: still waiting, so that the waiting steps all
        with pytest.raises(RenderShareSpent):  # come back together, oldest first
            renderer.render("tn_a", {"x": "{{ trigger.body.order.id }}"}, CTX)
        assert 1.4 < renderer.wait_s("tn_a") < 1.6
        clock.offset += 1.7
        assert renderer.wait_s("tn_a") == 0.0
        assert renderer.render("tn_a", {"x": "{{ trigger.body.order.id }}"}, CTX) == {"x": 7}

    def test_a_render_is_not_cut_short_by_the_share(self) -> None:
        clock = _Clock()
        renderer = TemplateRenderer(timeout_s=1.0, tenant_share=0.1, clock=clock)
        renderer.render("tn_a", {"x": "{{ spend(0.24) }}"}, {**CTX, "spend": clock.spend})
        loop = "{% for a in range(1000) %}{% for b in range(100) %}{% endfor %}{% endfor %}ok"
        # 0.01 s short of a burst, but the render has the whole timeout: it finishes, and
        # then the tenant waits.
        assert renderer.render("tn_a", {"text": loop}, CTX) == {"text": "ok"}
        assert renderer.wait_s("tn_a") > 2.5

    def test_the_render_timeout_still_fails_the_step(self) -> None:
        renderer = TemplateRenderer(timeout_s=0.05, tenant_share=0.1)
        doubling = (
            "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}{% endif %}"
            "{% endmacro %}{{ f(40) }}"
        )
        with pytest.raises(TemplateRenderError, match=r"longer than 0\.05 s"):
            renderer.render("tn_a", {"text": doubling}, CTX)
        # The time it took counts: the tenant owes the whole timeout and waits.
        with pytest.raises(RenderShareSpent):
            renderer.render("tn_a", {"text": "{{ trigger.body.order.id }}"}, CTX)
