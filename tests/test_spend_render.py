"""The spend's rendering: only what moved is formatted again, and the bytes equal a fresh render's."""

from __future__ import annotations

from decimal import Decimal

from exporter.spend.feeds import FEEDS
from exporter.spend.ledger import Ledger
from exporter.spend.render import SpendRenderer

A = ("proj_a", "gpt-4o, input", "usd")
B = ("proj_b", "gpt-4o, input", "usd")
COSTS, COMPLETIONS = (next(feed for feed in FEEDS if feed.endpoint == name) for name in ("costs", "completions"))
TOKENS = (None,) * (len(COMPLETIONS.columns) - 1)  # a completions row's cells but its requests: none reported


def ledgers() -> tuple[Ledger, Ledger]:
    return Ledger(COSTS.series, whole=COSTS.whole), Ledger(COMPLETIONS.series, whole=COMPLETIONS.whole)


def body(part) -> bytes:
    return b"".join(bytes(buffer) for buffer in part.raw)


def test_an_incremental_render_is_byte_for_byte_a_fresh_one():
    costs, tokens = ledgers()
    costs.record([(0, B, (Decimal("2"),))])
    tokens.record([(0, ("proj_a", "m"), (7, 3, *TOKENS[2:], 1))])
    renderer = SpendRenderer()
    first = renderer.render([costs, tokens], {B: Decimal("2")}, {})
    costs.record([(0, B, (Decimal("2.50"),)), (0, A, (Decimal("1.1"),))])
    month = {A: Decimal("1.1"), B: Decimal("2.5")}
    again = renderer.render([costs, tokens], month, {}, month_moved={A, B})
    assert body(again) == body(SpendRenderer().render([costs, tokens], month, {}))
    text = body(again).decode()
    assert text.index('project_id="proj_a"') < text.index('project_id="proj_b"')  # a new series in its place
    assert 'openai_project_cost_total{project_id="proj_b",line_item="gpt-4o, input",currency="usd"} 2.5\n' in text
    # The tokens family did not move: its bytes, plain and deflated, are those of the first render.
    assert any(buffer is previous for buffer in again.deflated for previous in first.deflated if len(previous) > 40)


def test_a_family_of_counts_is_formatted_whole_when_any_grew_and_new_series_take_their_place():
    costs, tokens = ledgers()
    tokens.record([(0, ("proj_b", "m"), (5, 1, *TOKENS[2:], 2))])
    renderer = SpendRenderer()
    renderer.render([costs, tokens], {}, {})
    tokens.record([(0, ("proj_b", "m"), (9, 1, *TOKENS[2:], 3)), (0, ("proj_a", "100%"), (4, 4, *TOKENS[2:], 1))])
    again = body(renderer.render([costs, tokens], {}, {}))
    assert again == body(SpendRenderer().render([costs, tokens], {}, {}))
    text = again.decode()
    assert 'openai_project_tokens_total{project_id="proj_b",model="m",endpoint="completions",type="input"} 9\n' in text
    assert 'openai_project_requests_total{project_id="proj_a",model="100%",endpoint="completions"} 1\n' in text
    assert text.index('project_id="proj_a"') < text.index('project_id="proj_b"')


def test_a_gauge_series_that_is_gone_is_not_rendered_and_nothing_moved_renders_the_same():
    renderer = SpendRenderer()
    renderer.render([], {A: Decimal(1), B: Decimal(2)}, {})
    part = renderer.render([], {B: Decimal(2)}, {})
    assert b"proj_a" not in body(part) and b"proj_b" in body(part)
    assert body(renderer.render([], {B: Decimal(2)}, {}, month_moved=set())) == body(part)
