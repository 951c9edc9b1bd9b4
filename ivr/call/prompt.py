"""One utterance played to the caller, with its own interruptibility (barge-in).

The `Prompt` feeds `CallLeg.play` in ~100 ms chunks, keeping the leg's outgoing buffer topped up to about
`TOP_UP_MS` so an interruption drops at most that much queued audio, and `interrupt()` clears the leg's buffer.
A streaming prompt (`streaming=True`) starts with the audio of its first sentence while the rest is still being
synthesized: `append()` adds audio as it is rendered and `end_of_audio()` says nothing more will come, so a long
reply starts playing as soon as a short one would.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ivr.call.leg import CallLeg
from ivr.speech.audio_ops import pcm_ms

CHUNK_MS = 100            # audio handed to the leg per play() call
TOP_UP_MS = 200           # keep at most this much queued in the leg (bounds the audio a barge-in must discard)
POLL_S = 0.02             # how often the feeder looks at the leg's buffer (one frame)


class Prompt:
    """Playback handle: `start()`, then `wait_for_playout()` or `interrupt()`."""

    def __init__(self, leg: CallLeg, pcm: bytes, *, allow_barge_in: bool = True, text: str = "",
                 clock: Callable[[], float] = time.monotonic, streaming: bool = False) -> None:
        self.leg = leg
        self.pcm = pcm
        self.text = text
        self.allow_barge_in = allow_barge_in
        self.interrupted = False
        self.first_audio_at: float | None = None   # when the first chunk was queued (turn latency end point)
        self._clock = clock
        self._fed = 0                 # bytes handed to the leg
        self._done = asyncio.Event()
        self._more = asyncio.Event()      # set by append()/end_of_audio(): the feeder waits on it when it ran dry
        self._complete = not streaming    # no more audio will be appended
        self._task: asyncio.Task[None] | None = None
        self._rate = leg.sample_rate
        self._chunk = leg.sample_rate * 2 * CHUNK_MS // 1000

    @property
    def duration_ms(self) -> int:
        return pcm_ms(len(self.pcm), self._rate)

    @property
    def played_ms(self) -> int:
        """Audio that has actually left (fed minus still queued in the leg)."""
        fed = pcm_ms(self._fed, self._rate)
        if self._done.is_set():
            return fed
        return max(0, fed - self.leg.queued_playback_ms())

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def append(self, pcm: bytes) -> None:
        """More audio for a streaming prompt (ignored once it ended, was interrupted or was declared complete)."""
        if self._complete or self._done.is_set() or not pcm:
            return
        self.pcm += pcm
        self._more.set()

    def end_of_audio(self) -> None:
        """No more audio will be appended: the prompt ends when what it holds has played out."""
        self._complete = True
        self._more.set()

    def start(self) -> None:
        """Queue the first audio now (so the reply's first audio time is known at once), feed the rest in a task."""
        if self._task is None and not self._done.is_set():
            self._top_up()
            self._task = asyncio.create_task(self._feed(), name="prompt")

    def _top_up(self) -> None:
        while self._fed < len(self.pcm) and self.leg.queued_playback_ms() < TOP_UP_MS:
            chunk = self.pcm[self._fed:self._fed + self._chunk]
            self.leg.play(chunk)
            if self.first_audio_at is None:
                self.first_audio_at = self._clock()
            self._fed += len(chunk)

    async def _feed(self) -> None:
        try:
            while True:
                self._top_up()
                if self._fed < len(self.pcm):
                    await asyncio.sleep(POLL_S)
                elif not self._complete:
                    self._more.clear()
                    await self._more.wait()       # ran ahead of the synthesizer: the next sentence comes soon
                else:
                    break
            # The leg offers no "drained" event (its buffer empties on the media thread): poll it.
            while self.leg.queued_playback_ms() > 0:  # noqa: ASYNC110
                await asyncio.sleep(POLL_S)
        finally:
            self._done.set()

    async def wait_for_playout(self) -> None:
        """Return when everything was played out (or the prompt was interrupted)."""
        self.start()
        await self._done.wait()

    def interrupt(self) -> None:
        """Stop at once: drop what the leg still holds. Idempotent; no-op once played out."""
        if self._done.is_set():
            return
        self.interrupted = True
        self._fed = max(0, self._fed - self.leg.queued_playback_ms() * self._rate * 2 // 1000)
        self.leg.clear_playback()
        if self._task is not None:
            self._task.cancel()
        self._done.set()

    async def aclose(self) -> None:
        """Stop and wait for the feeder task to finish (teardown)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._done.set()
