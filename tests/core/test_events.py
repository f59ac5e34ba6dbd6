"""relay(): running one core job inside another."""

from __future__ import annotations

from napari_segloop.core.events import Notice, Progress, relay, run_to_end


def _job(log: list[str]):
    try:
        yield Progress(0, 2)
        yield Notice("odd input", "warning")
        yield Progress(1, 2)
        return "result"
    finally:
        log.append("closed")


def test_relay_changes_or_drops_events_and_returns_the_result():
    log: list[str] = []
    seen = []
    out = run_to_end(relay(_job(log), lambda e: e if isinstance(e, Notice) else None), seen.append)
    assert out == "result"
    assert seen == [Notice("odd input", "warning")]
    assert log == ["closed"]


def test_closing_the_outer_job_closes_the_inner_one_at_once():
    log: list[str] = []
    outer = relay(_job(log), lambda e: e)
    assert next(outer) == Progress(0, 2)
    outer.close()
    assert log == ["closed"]
