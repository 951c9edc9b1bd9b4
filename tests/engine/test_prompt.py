"""The playback handle: bounded top-up of the leg's buffer, play-out, interruption."""
from __future__ import annotations

import asyncio

from ivr.call.prompt import CHUNK_MS, TOP_UP_MS, Prompt
from testkit.fakes import FakeLeg, tone


async def test_plays_out_in_chunks_keeping_the_leg_buffer_bounded() -> None:
    leg = FakeLeg()
    prompt = Prompt(leg, tone(700))
    prompt.start()
    assert prompt.first_audio_at is not None              # first audio queued synchronously at start
    peak = 0
    while not prompt.done:
        peak = max(peak, leg.queued_playback_ms())
        await asyncio.sleep(0.01)
    assert peak <= TOP_UP_MS + CHUNK_MS
    assert all(n <= 8000 * 2 * CHUNK_MS // 1000 for _, n in leg.play_calls)
    assert prompt.played_ms == 700 and not prompt.interrupted
    assert bytes(leg.sent) == tone(700)


async def test_interrupt_clears_the_leg_and_reports_what_was_heard() -> None:
    leg = FakeLeg()
    prompt = Prompt(leg, tone(3000))
    prompt.start()
    await asyncio.sleep(0.5)
    prompt.interrupt()
    assert prompt.interrupted and prompt.done
    assert leg.clear_calls == 1 and leg.queued_playback_ms() == 0
    assert 400 <= prompt.played_ms <= 700
    prompt.interrupt()                                    # idempotent
    assert leg.clear_calls == 1
    await prompt.aclose()
    await asyncio.sleep(0.1)
    assert leg.sent_ms <= 700                             # nothing more was fed after the interruption


async def test_wait_for_playout_and_empty_prompt() -> None:
    leg = FakeLeg()
    empty = Prompt(leg, b"")
    await asyncio.wait_for(empty.wait_for_playout(), 1)
    assert empty.played_ms == 0
    short = Prompt(leg, tone(200))
    await asyncio.wait_for(short.wait_for_playout(), 2)
    assert short.played_ms == 200
