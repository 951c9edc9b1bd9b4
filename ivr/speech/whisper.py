"""Whisper speech recognition at end of utterance (CTranslate2 through faster-whisper's feature extractor and
tokenizer), self-contained so a per-node recognition service can host it unchanged.

- `WhisperModel`: the process's model (loaded once, ~1 s, ~300 MB), thread-safe; `transcribe()` decodes one
  utterance with the guards below and returns a `WhisperResult`.
- `WhisperDecoder`: one call's `ivr.speech.recognizer.Decoder`. It buffers the utterance the stream's VAD and
  endpointer delimit (so only speech reaches it), decodes once at `final()`, and maps the text onto the answer
  the prompt expects (`ivr.speech.answers`). No partials: barge-in is decided on voiced time.
- `WhisperRecognizer`: the `SpeechRecognizer` provider over a shared model and the engine's bounded pool.

Guards, because Whisper writes fluent text for any sound: one temperature (0) so no fallback loop re-decodes
the same audio up to six times; a token budget proportional to the audio and capped by the expected answer
(`budget_for`: a menu word or yes/no needs a few tokens, a folio ~3 per digit); results with a high no-speech
probability, a low mean log-probability, a compressible (looping) text or a repeated n-gram are no-match ("").
No initial prompt by default: with one, Whisper wrote text on silence and noise, and looped on single digits.

One-word answers ("tres" -> "3 3 3 3 3 3 3 3 3 3 3 3 3 3") looped for two reasons, both fixed here (bench/asr.py):
the cut window was padded in the log-mel domain with 0.0, which is not silence in Whisper's normalisation
(silence is the clamp at max - 8 dB), so the model heard a steady sound after the word and kept writing it;
and the decode ran without timestamps, so nothing told the model where the speech ended. The window is now
padded with zero samples before the features are computed, and the decode predicts timestamps (dropped from
the text). A mild repetition penalty (1.1) breaks what loops remain; a closed answer that still repeats one word
is collapsed by the mapping (`ivr.speech.answers`).

Grammar rescoring (`rescore_closed`), the counterpart of a Vosk grammar: when a menu, yes/no or city prompt's
free decode gives no valid answer on a short utterance (also a one-key digit prompt; "tres" written "gréis" when the VAD opened late, "ocho"
written "oja" by int8 on AVX2), the prompt's valid answers, in the forms `ivr.speech.answers.closed_forms` lists,
are scored against the same audio by forced decoding (`WhisperModel.score_texts`), and the best is taken only
when it is likely enough and clearly ahead of the next (`WhisperOptions.rescore_*`). It runs at `final()`, in
the decode pool, never on the per-frame path.
"""
from __future__ import annotations

import gzip
import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from foundation.logs import kv
from ivr.metrics import EngineMetrics
from ivr.speech.answers import (
    CLOSED_KINDS,
    NearWords,
    as_written,
    budget_for,
    clean_text,
    closed_answer,
    closed_forms,
    collapse_word_repeats,
    digits_in,
    fold,
    map_answer,
    stray_words,
)
from ivr.speech.audio_ops import resample
from ivr.speech.backlog import DecodeBacklog
from ivr.speech.expect import Expect
from ivr.speech.recognizer import Decoder, RecognizeStream, StreamConfig, pool_size

log = logging.getLogger("ivr.speech.whisper")

WHISPER_RATE = 16000
FRAMES_PER_S = 100               # mel frames per second (hop 160 at 16 kHz)
FULL_WINDOW_FRAMES = 3000        # Whisper's 30 s window
MAX_AUDIO_S = 30.0
SALVAGE_MAX_S = 2.0              # a one-word answer with its pre-roll and endpoint silence is ~1-1.5 s
SHORT_WORDS = 2                  # free speech this short is kept down to closed_log_prob_threshold
CLOSED_OR_DIGITS = ("yes_no", "menu", "city", "digits")
RESCORE_FINALISTS = 2            # answers whose other written forms are scored too (the best and its rival)


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    language: str = "es"
    beam_size: int = 3
    # "utterance": the encoder sees the utterance plus `tail_pad_s` of silence instead of a 30 s window (measured
    # in bench/asr.py: several times faster); "full": the standard 30 s window.
    window: Literal["utterance", "full"] = "utterance"
    tail_pad_s: float = 0.5
    min_window_s: float = 1.0
    max_decode_s: float = 4.0            # wall-time budget per utterance: a later result is kept but marked late,
                                         # and no further work (grammar rescoring) is spent on it
    tokens_per_s: float = 15.0           # token budget: Spanish speech is ~8-10 tokens/s; loops run to the budget
    min_tokens: int = 24
    # A cut window makes Whisper repeat itself now and then; such a result is decoded once more on the 30 s window.
    retry_full_on_loop: bool = False
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    min_audio_s: float = 0.2
    initial_prompt: str | None = None
    timestamps: bool = True              # predict timestamps: the model marks where speech ends and stops there
    repetition_penalty: float = 1.1
    max_tokens: int | None = None        # cap on the budget, from the expected answer (`budget_for`)
    # a closed answer whose text is a valid answer (a digit for a menu, sí/no) is kept down to this mean log-prob
    # ("ocho" alone scores -1.0 to -1.4 with its timestamp tokens; loud noise Whisper writes words for, -1.2 to -1.8,
    # but that never passes the speech VAD)
    closed_log_prob_threshold: float = -1.6
    # When the prompt expects digits (`for_expect`), measured in bench/asr_digits.py (144 strings, tight/natural/
    # other-voice reading, μ-law and noise 20/10 dB): beam 5 with its 5 readings, the mapping preferring one with
    # the expected digit count (`pick_digits`), 121 -> 132 exact for ~8 % more CPU per decode. A repetition
    # penalty of 1.0 (digit strings do repeat digits) made PINs run on ("7870" -> "78777877"): kept at 1.1.
    digits_beam_size: int = 5
    digits_repetition_penalty: float = 1.1
    digits_hypotheses: int = 5
    num_hypotheses: int = 1
    # Grammar rescoring (`rescore_closed`): when a menu, yes/no or city prompt's free decode gives no valid answer
    # on a short utterance, each valid answer's written forms are scored against the audio by forced decoding
    # (log-probability summed over its tokens); the best is taken when it explains the audio well and leads the
    # next answer (`rescore_min_logprob`, `rescore_margin`) or explains it less well but leads by far
    # (`rescore_clear_logprob`, `rescore_clear_margin`; a margin of 4 is e^4 = 55 times likelier). MEASURED by
    # bench/asr_closed.py on 876 human clips (onset cut 0-150 ms, lead 0-300 ms, mu-law, noise 20/10 dB): free
    # decode 217 of 540 answers right, 7 wrong; with rescoring 323 right, the same 7 wrong; non-answers taken as an
    # answer 2 -> 5 of 336 (the 3 more at 10 dB SNR); one tier (-7, 2.0) instead: 325 right, 12 wrong, 6 taken.
    rescore: bool = True
    rescore_max_audio_s: float = 2.5     # a one- to three-word answer with pre-roll and endpoint silence
    rescore_min_logprob: float = -6.0
    rescore_margin: float = 1.5
    rescore_clear_logprob: float = -8.0
    rescore_clear_margin: float = 4.0
    # A closed answer read from more than the answer (a stray word: babble's "Un chau," -> "uno") or from a loop
    # the guards rejected (babble's "No, no, no, ..." -> "no") is taken only below this no-speech probability
    # (Whisper's own no-speech threshold, here alone, not joined to a low log-prob). A reading that is just the
    # answer ("Tres.", "No, no.") keeps the rules above. MEASURED by bench/asr_closed.py: babble taken as an answer
    # 27 -> 12 of 240 clips, sí/no heard 117 -> 112 of 180 (looped "no"), digits at a menu 206 -> 206. 1.0: off.
    cover_no_speech: float = 0.6


@dataclass(frozen=True, slots=True)
class WhisperResult:
    text: str                      # "" when rejected
    raw: str                       # what Whisper wrote
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    tokens: int
    audio_s: float
    decode_s: float
    rejected: str | None = None    # why the text was dropped: no_speech, low_logprob, loop, repetition, short
    # decoded after max_decode_s (an overloaded machine). Kept: the caller's wait is already spent, and dropping a
    # good reading only makes them say it again (a re-prompt, ~5 s more on the same busy machine)
    late: bool = False
    # the beam's other readings, best first, with their mean log-probs (only when num_hypotheses > 1)
    alternatives: tuple[tuple[str, float], ...] = ()

    @property
    def confidence(self) -> float | None:
        return float(np.exp(self.avg_logprob)) if self.text else None


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(gzip.compress(data)) if data else 0.0


DIGIT_SPELLING_RATIO = 0.85
"""How close a word must be to a digit word to count as Whisper's spelling of it in the repetition guards:
"cerro" for "cero" (0.89) is, "adiós" (0.75 to "dos"), a known hallucination on noise, is not."""


def _digit_word(word: str) -> bool:
    """A digit written as a figure, a digit word, or Whisper's spelling of one ("cerro" for "cero"): unlike the
    answer mapping's `_near_number_word` (digits, teens and tens by sound key at 0.75), only the ten digit words,
    compared as written, at DIGIT_SPELLING_RATIO."""
    plain = fold(word)
    return plain.isdigit() or _DIGIT_SPELLINGS.match(plain) is not None


def collapse_repeats(text: str, *, min_n: int = 2) -> str:
    """Drop immediate repetitions of a word sequence of `min_n`+ words ("modo de grabación modo de grabación" ->
    "modo de grabación"): on a window cut to the utterance Whisper sometimes starts the sentence again."""
    words = text.split()
    keys = [re.sub(r"\W+", "", w.lower()) for w in words]
    i = 0
    while i < len(words):
        for n in range(min_n, (len(words) - i) // 2 + 1):
            if keys[i:i + n] == keys[i + n:i + 2 * n] and not all(_digit_word(k) for k in keys[i:i + n]):
                end = i + 2 * n
                while keys[i:i + n] == keys[end:end + n]:
                    end += n
                # a trailing partial repeat ("... el número que tengo es el número que") goes too
                tail = end
                while tail < len(words) and tail - end < n and (
                        keys[tail] == keys[i + tail - end]
                        or (tail == len(words) - 1 and keys[i + tail - end].startswith(keys[tail]))):
                    tail += 1
                if tail == len(words):
                    end = tail
                del words[i + n:end]
                del keys[i + n:end]
                break
        else:
            i += 1
    return " ".join(words)


def repeated_ngram(text: str, *, max_n: int = 4, times: int = 3) -> bool:
    """True when some 1..max_n-word sequence occurs `times` times in a row ("CURP, CURP, CURP")."""
    words = re.findall(r"\w+", text.lower())
    for n in range(1, max_n + 1):
        for i in range(0, len(words) - n * times + 1):
            gram = words[i:i + n]
            if all(words[i + k * n:i + (k + 1) * n] == gram for k in range(1, times)):
                # Digit strings legitimately repeat ("cero cero cero"): those are answers, not loops, and so
                # are Whisper's spellings of them ("Dos, cerro, cerro, cerro" for the folio 2000...).
                if all(_digit_word(w) for w in gram):
                    continue
                return True
    return False


_DIGITS = ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve")
_DIGIT_SPELLINGS = NearWords(_DIGITS, cutoff=DIGIT_SPELLING_RATIO, key=as_written)


class WhisperModel:
    """A CTranslate2 Whisper model directory (model.bin, config.json, tokenizer.json, vocabulary.json)."""

    def __init__(self, path: Path, *, options: WhisperOptions | None = None, cpu_threads: int = 1,
                 parallel: int = 1, compute_type: str = "int8") -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer
        self.path = path
        self.options = options or WhisperOptions()
        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type=compute_type,
                                                intra_threads=cpu_threads, inter_threads=parallel)
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self.tokenizer = Tokenizer(tokenizers.Tokenizer.from_file(str(path / "tokenizer.json")), True,
                                   task="transcribe", language=self.options.language)
        self._prompts: dict[tuple[str | None, bool], list[int]] = {}
        self._tokens: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        # seconds one forced-decoding text costs here (running mean): rescoring is skipped when it would pass the
        # decode's time cap
        self.seconds_per_text = 0.025

    def _prompt(self, initial: str | None, timestamps: bool) -> list[int]:
        with self._lock:
            cached = self._prompts.get((initial, timestamps))
            if cached is None:
                tok = self.tokenizer
                cached = []
                if initial:
                    cached = [tok.sot_prev, *tok.encode(" " + initial.strip())[-223:]]
                cached += [*tok.sot_sequence]
                if not timestamps:
                    cached.append(tok.no_timestamps)
                self._prompts[(initial, timestamps)] = cached
            return cached

    def _window(self, pcm: bytes, sample_rate: int, audio_s: float, opt: WhisperOptions, *,
                for_encoded: bool = False) -> tuple[Any, int]:
        """The log-mel window of the utterance (a StorageView [1, n_mels, frames]) and its frame count."""
        audio = np.frombuffer(resample(pcm, sample_rate, WHISPER_RATE), dtype="<i2").astype(np.float32) / 32768.0
        if opt.window == "full":
            frames = FULL_WINDOW_FRAMES
        else:
            frames = int(max(opt.min_window_s, audio_s + opt.tail_pad_s) * FRAMES_PER_S)
            frames = min(FULL_WINDOW_FRAMES, frames + frames % 2)
            if for_encoded and frames // 2 == self.model.n_mels:
                # CTranslate2 tells encoder output ([1, frames / 2, d_model]) from a mel window ([1, n_mels,
                # frames]) by dim 1 != n_mels: an encoded 1.6 s window would be encoded again (garbage, 10 s)
                frames += 2
        # Pad with zero SAMPLES, then compute the features: a log-mel of 0.0 is not silence for Whisper.
        samples = frames * WHISPER_RATE // FRAMES_PER_S
        audio = np.pad(audio, (0, max(0, samples - audio.size)))[:samples]
        mel = self.features(audio, padding=0)[:, :frames]
        if mel.shape[-1] < frames:
            mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[-1])), constant_values=float(mel.min()))
        return self._ct2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32)), frames

    def encode_window(self, pcm: bytes, sample_rate: int, options: WhisperOptions | None = None) -> tuple[Any, int]:
        """The encoder output of the utterance's window (the window `transcribe` sees) and its mel frame count,
        for `score_texts`: encode once, score many texts."""
        opt = options or self.options
        audio_s = min(len(pcm) / (2 * sample_rate), MAX_AUDIO_S)
        pcm = pcm[: int(MAX_AUDIO_S * sample_rate) * 2]
        features, frames = self._window(pcm, sample_rate, audio_s, opt, for_encoded=True)
        return np.asarray(self.model.encode(features, to_cpu=True)), frames

    def score_texts(self, encoded: tuple[Any, int], texts: Sequence[str]) -> list[float]:
        """Forced decoding: the log-probability (natural log, summed over its tokens) of each of `texts` as the
        transcript of the encoded window (`encode_window`), in one batch (`Whisper.align`, which feeds
        <|notimestamps|>, the text and <|endoftext|>). The probabilities are over text tokens only
        (CTranslate2 masks <|endoftext|> and the timestamps out of that softmax), so a text's end is scored by
        its full stop: "Dos." for "dos mil" scores low. Blocking; ~25 ms per text on one thread (the
        vocabulary projection at every position)."""
        if not texts:
            return []
        output, frames = encoded
        batch = self._ct2.StorageView.from_array(np.ascontiguousarray(np.repeat(output, len(texts), axis=0)))
        tokens = [self._text_tokens(t) for t in texts]
        t0 = time.perf_counter()
        results = self.model.align(batch, list(self.tokenizer.sot_sequence), tokens, [frames] * len(texts))
        self.seconds_per_text += 0.2 * ((time.perf_counter() - t0) / len(texts) - self.seconds_per_text)
        return [float(np.sum(np.log(np.maximum(np.asarray(r.text_token_probs, dtype=np.float64), 1e-30))))
                for r in results]

    def _text_tokens(self, text: str) -> list[int]:
        with self._lock:
            cached = self._tokens.get(text)
            if cached is None:
                if len(self._tokens) > 4096:      # phrases come from prompts; a dialogue inventing them stays bounded
                    self._tokens.clear()
                cached = self._tokens[text] = list(self.tokenizer.encode(" " + text.strip()))
            return cached

    def transcribe(self, pcm: bytes, sample_rate: int, options: WhisperOptions | None = None) -> WhisperResult:
        """Decode one utterance of s16le mono PCM (blocking; call from a pool thread)."""
        opt = options or self.options
        t0 = time.perf_counter()
        first = self._transcribe(pcm, sample_rate, opt, t0)
        if opt.window == "utterance" and opt.retry_full_on_loop and first.rejected in ("loop", "repetition") \
                and not first.late:
            second = self._transcribe(pcm, sample_rate, replace(opt, window="full"), t0)
            return second
        return first

    def _transcribe(self, pcm: bytes, sample_rate: int, opt: WhisperOptions, t0: float) -> WhisperResult:
        audio_s = len(pcm) / (2 * sample_rate)
        if audio_s < opt.min_audio_s:
            return WhisperResult("", "", 0.0, 1.0, 0.0, 0, audio_s, 0.0, rejected="short")
        if audio_s > MAX_AUDIO_S:
            pcm = pcm[: int(MAX_AUDIO_S * sample_rate) * 2]
            audio_s = MAX_AUDIO_S
        features, _ = self._window(pcm, sample_rate, audio_s, opt)
        budget = max(opt.min_tokens, int(audio_s * opt.tokens_per_s))
        if opt.max_tokens is not None:
            budget = min(budget, opt.max_tokens)
        prompt = self._prompt(opt.initial_prompt, opt.timestamps)
        # Timestamp tokens (a pair per segment) come on top of the text's budget.
        room = budget + (8 if opt.timestamps else 0)
        hypotheses = max(1, min(opt.num_hypotheses, opt.beam_size))
        result = self.model.generate(features, [prompt], beam_size=opt.beam_size, max_length=len(prompt) + room,
                                     return_scores=True, return_no_speech_prob=True, suppress_blank=True,
                                     suppress_tokens=[-1], repetition_penalty=opt.repetition_penalty,
                                     num_hypotheses=hypotheses)[0]
        alternatives = tuple(
            (self.tokenizer.decode([t for t in seq if t < self.tokenizer.eot]).strip(),
             float(score) * len(seq) / (len(seq) + 1) if seq else float(score))
            for seq, score in zip(result.sequences_ids[1:], result.scores[1:], strict=False))
        tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
        hit_budget = len(tokens) >= budget or len(result.sequences_ids[0]) >= room
        written = self.tokenizer.decode(tokens).strip()
        # The compression check looks at what Whisper wrote (a loop); the text keeps one copy of a sentence
        # Whisper restarted ("modo de grabación, modo de grabación, modo de grabación").
        raw = collapse_repeats(written) if opt.window == "utterance" else written
        n = len(result.sequences_ids[0])
        # CTranslate2 scores are length-normalized cumulative log-probs; faster-whisper's average includes EOT.
        avg_logprob = float(result.scores[0]) * n / (n + 1) if n else float(result.scores[0])
        no_speech = float(result.no_speech_prob)
        ratio = compression_ratio(written)
        decode_s = time.perf_counter() - t0
        reason: str | None = None
        if not raw:
            reason = "empty"
        elif no_speech > opt.no_speech_threshold and avg_logprob < opt.log_prob_threshold:
            reason = "no_speech"
        elif avg_logprob < opt.log_prob_threshold:
            reason = "low_logprob"
        elif ratio > opt.compression_ratio_threshold or hit_budget:
            reason = "loop"
        elif repeated_ngram(raw) or repeated_ngram(written, times=4):
            reason = "repetition"
        return WhisperResult("" if reason else raw, raw, avg_logprob, no_speech, ratio, len(tokens), audio_s,
                             decode_s, rejected=reason, alternatives=alternatives, late=decode_s > opt.max_decode_s)


@dataclass(frozen=True, slots=True)
class Rescore:
    """The outcome of grammar rescoring: the answer taken (None: none clearly likely and ahead), and the scores."""
    answer: str | None
    best: str
    logprob: float                 # the best answer's log-probability (its best-scoring form)
    margin: float                  # how far ahead of the next answer (inf with one answer)
    scores: tuple[tuple[str, float], ...]      # every answer, best first
    decode_s: float

    @property
    def share(self) -> float:
        """The best answer's probability among the valid answers (the turn's confidence when it is taken)."""
        logs = np.array([s for _, s in self.scores])
        return float(np.exp(self.logprob - np.logaddexp.reduce(logs)))


def rescore_accepts(logprob: float, margin: float, opt: WhisperOptions) -> bool:
    """Whether a rescored answer is taken (see WhisperOptions.rescore_*): likely and ahead, or clearly ahead."""
    return ((logprob >= opt.rescore_min_logprob and margin >= opt.rescore_margin)
            or (logprob >= opt.rescore_clear_logprob and margin >= opt.rescore_clear_margin))


def rescore_closed(model: WhisperModel, pcm: bytes, sample_rate: int, expect: Expect, opt: WhisperOptions, *,
                   budget_s: float | None = None) -> Rescore | None:
    """Grammar rescoring, the Whisper counterpart of a Vosk grammar: the valid answers of a closed prompt
    (`closed_forms`) scored against the utterance by forced decoding; an answer scores its best form. Two
    passes over one encoding, because each text costs a decoder pass over the whole vocabulary: every answer's
    first form, then the other forms of the RESCORE_FINALISTS best answers. None when the prompt has no closed
    answers, or when scoring them would take longer than `budget_s` at the model's measured cost per text."""
    forms = closed_forms(expect)
    if not forms:
        return None
    if budget_s is not None and (len(forms) + 3 * RESCORE_FINALISTS) * model.seconds_per_text > budget_s:
        log.info("whisper rescoring skipped %s", kv(answers=len(forms), budget_s=round(budget_s, 2)))
        return None
    t0 = time.perf_counter()
    encoded = model.encode_window(pcm, sample_rate, opt)
    best_of = dict(zip(forms, model.score_texts(encoded, [fs[0] for fs in forms.values()]), strict=True))
    finalists = sorted(best_of, key=lambda a: -best_of[a])[:RESCORE_FINALISTS]
    more = [(a, f) for a in finalists for f in forms[a][1:]]
    for (a, _), score in zip(more, model.score_texts(encoded, [f for _, f in more]), strict=True):
        best_of[a] = max(best_of[a], score)
    ranked = sorted(best_of.items(), key=lambda x: -x[1])
    answer, best = ranked[0]
    margin = best - ranked[1][1] if len(ranked) > 1 else float("inf")
    taken = answer if rescore_accepts(best, margin, opt) else None
    return Rescore(taken, answer, best, margin, tuple(ranked), time.perf_counter() - t0)


ALTERNATIVE_MARGIN = 0.35      # how much lower a beam reading's mean log-prob may be and still replace the best


def pick_digits(text: str, result: WhisperResult, expect: Expect) -> str:
    """The best beam reading when it is a digit string of the expected length, else the first other reading (at
    most ALTERNATIVE_MARGIN below it in mean log-prob) that is: a folio heard with a digit missing ("1765436")
    is often right one reading down. Words (the caller said something else) are left to the dialogue."""
    want = expect.max_digits
    if text.isdigit() and len(text) == want:
        return text
    if not text.isdigit():
        return text
    for alt, logprob in result.alternatives:
        if logprob < result.avg_logprob - ALTERNATIVE_MARGIN:
            break
        mapped = map_answer(alt, expect)
        if mapped.isdigit() and len(mapped) == want:
            return mapped
    return text


def for_expect(opt: WhisperOptions, expect: Expect) -> WhisperOptions:
    """The decode options for what the prompt expects: the token budget of the answer, and the digit mode."""
    budget = budget_for(expect)
    if budget is not None:
        opt = replace(opt, max_tokens=budget)
    if expect.kind == "digits":
        opt = replace(opt, beam_size=opt.digits_beam_size, repetition_penalty=opt.digits_repetition_penalty,
                      num_hypotheses=opt.digits_hypotheses)
    return opt


class WhisperDecoder:
    """One call's `Decoder`: buffers the utterance, decodes at `final()`, maps closed answers."""

    def __init__(self, model: WhisperModel, sample_rate: int, call_id: str = "-",
                 metrics: EngineMetrics | None = None, options: WhisperOptions | None = None) -> None:
        self._model = model
        self._options = options
        self._rate = sample_rate
        self._call_id = call_id
        self._metrics = metrics
        self._buf = bytearray()
        self._max_bytes = int(MAX_AUDIO_S * sample_rate) * 2
        self._expect = Expect()
        self.last: WhisperResult | None = None
        self.free_text = ""                     # the last decode's answer before rescoring (for benches)
        self.rescored: Rescore | None = None    # the last decode's grammar rescoring, when it ran
        self.uncovered: str | None = None       # the last decode's answer dropped as not covering its reading
        self._peeked: tuple[str, float | None] | None = None

    def accept(self, pcm: bytes) -> str | None:
        room = self._max_bytes - len(self._buf)
        if room > 0:
            self._buf += pcm[:room]
        return None

    def partial(self) -> str:
        return ""

    def final(self) -> tuple[str, float | None]:
        pcm = bytes(self._buf)
        self._buf.clear()
        self._peeked = None
        if not pcm:
            return "", None
        return self._decode(pcm, "final")

    def peek(self) -> str:
        """What the utterance so far reads as, without ending it (the stream asks at a pause in a digit string:
        complete, the turn ends at once; short of the expected digits, it waits for the next group)."""
        if not self._buf:
            return ""
        self._peeked = self._decode(bytes(self._buf), "peek")
        return self._peeked[0]

    def final_from_peek(self) -> tuple[str, float | None]:
        """The final when nothing was voiced since the last peek: that reading, without decoding again."""
        peeked = self._peeked
        if peeked is None:
            return self.final()
        self._buf.clear()
        self._peeked = None
        return peeked

    def _read(self, result: WhisperResult, opt: WhisperOptions) -> str:
        """The answer a decode gives this prompt: the mapped text, or what the guards' salvage keeps."""
        written = result.text
        if written and self._expect.kind != "digits" and result.audio_s <= SALVAGE_MAX_S:
            written = collapse_word_repeats(written)      # "siete siete siete siete" from one short "siete"
        text = map_answer(written, self._expect) if written else self._salvage(result, opt)
        if self._expect.kind == "digits" and result.alternatives:
            text = pick_digits(text, result, self._expect)
        one_key = self._expect.kind == "digits" and self._expect.max_digits <= 1
        if text and (self._expect.kind in CLOSED_KINDS or one_key) and result.no_speech_prob >= opt.cover_no_speech:
            answer = closed_answer(text, self._expect)
            stray = stray_words(result.raw, answer, self._expect) if answer is not None else 0
            if answer is not None and (stray or result.rejected in ("loop", "repetition")):
                self.uncovered = text
                log.info("whisper closed answer not covering the reading %s",
                         kv(call_id=self._call_id, kind=self._expect.kind, stray=stray,
                            rejected=result.rejected or "-", no_speech=round(result.no_speech_prob, 2)))
                return ""
        return text

    def _decode(self, pcm: bytes, stage: str) -> tuple[str, float | None]:
        opt = for_expect(self._options or self._model.options, self._expect)
        result = self._model.transcribe(pcm, self._rate, opt)
        self.last = result
        self.uncovered = None
        text = self._read(result, opt)
        self.free_text = text
        self.rescored = None
        confidence = result.confidence
        if self._wants_rescore(text, result, opt):
            self.rescored = rescored = rescore_closed(self._model, pcm, self._rate, self._expect, opt,
                                                      budget_s=opt.max_decode_s - result.decode_s)
            if rescored is not None and rescored.answer is not None:
                if result.decode_s + rescored.decode_s > opt.max_decode_s:
                    log.info("whisper rescoring over the cap %s", kv(call_id=self._call_id,
                                                                     decode_s=round(rescored.decode_s, 3)))
                else:
                    text, confidence = rescored.answer, rescored.share
            if rescored is not None:
                log.info("whisper rescored %s", kv(call_id=self._call_id, kind=self._expect.kind,
                                                   taken=rescored.answer is not None and text == rescored.answer,
                                                   logprob=round(rescored.logprob, 2),
                                                   margin=round(rescored.margin, 2),
                                                   decode_s=round(rescored.decode_s, 3)))
        log.info("whisper %s", kv(call_id=self._call_id, stage=stage, audio_s=round(result.audio_s, 2),
                                  decode_s=round(result.decode_s, 3), tokens=result.tokens,
                                  logprob=round(result.avg_logprob, 2), no_speech=round(result.no_speech_prob, 2),
                                  rejected=result.rejected or "-", late=result.late, kind=self._expect.kind,
                                  chars=len(text)))
        return text, confidence

    def _wants_rescore(self, text: str, result: WhisperResult, opt: WhisperOptions) -> bool:
        """Rescore a closed prompt's short utterance whose free decode the guards rejected and that gave no
        valid answer (a word heard as "gréis", "oja", "C"). Not a text the decode accepted, even one word: forced
        scoring alone puts "Tres." first for "trece" and "trescientos" (a prefix; tests/speech/test_whisper.py),
        and what the caller clearly said should reach the dialogue as said."""
        one_key = self._expect.kind == "digits" and self._expect.max_digits == 1
        if not opt.rescore or not (self._expect.kind in CLOSED_KINDS or one_key) \
                or result.rejected in (None, "short") or result.late:
            return False
        if self.uncovered is not None:
            # babble's loop "No, no, no, ..." at a high no-speech probability: forced scoring takes "No." from it too
            return False
        digits, other = digits_in(collapse_word_repeats(clean_text(result.raw)))
        if len(digits) >= 2 and other == 0:
            # a number that is no option, heard but rejected ("trece" at -1.06): forced scoring would take its
            # prefix ("Tres." leads "trece" and "trescientos" by 4-7), so it stays a no-match
            return False
        return result.audio_s <= opt.rescore_max_audio_s and closed_answer(text, self._expect) is None

    def _salvage(self, result: WhisperResult, opt: WhisperOptions) -> str:
        """A closed answer the guards dropped but that is a valid answer: a single real word scores a low
        log-probability ("Ocho." ~ -1.5), and a one-word loop ("3 3 3 ...") is that word said once. Only audio
        the VAD called speech gets here, and only a valid answer to this prompt (or, for free speech, one or two
        words on at most SALVAGE_MAX_S of audio) is kept."""
        if result.rejected not in ("low_logprob", "loop", "repetition") or not result.raw:
            return ""
        if result.avg_logprob < opt.closed_log_prob_threshold:
            return ""
        raw = result.raw
        if result.rejected != "low_logprob":
            # how many digits a loop stands for is unknown; a long sound that loops is not a one-word answer
            if self._expect.kind == "digits" or result.audio_s > SALVAGE_MAX_S:
                return ""
            raw = collapse_word_repeats(clean_text(raw))
            if len(raw.split()) > 3:
                return ""
        answer = closed_answer(raw, self._expect)
        if answer is None and result.rejected == "low_logprob" and self._expect.kind not in CLOSED_OR_DIGITS \
                and result.audio_s <= SALVAGE_MAX_S:
            # one short word may come out repeated ("siete siete siete siete siete siete" from one "siete", int8
            # on AVX2): counted once, as an accepted text of this length is (_decode)
            raw = collapse_word_repeats(clean_text(raw))
        if answer is None and result.rejected == "low_logprob" and self._expect.kind not in CLOSED_OR_DIGITS \
                and len(clean_text(raw).split()) <= SHORT_WORDS and result.audio_s <= SALVAGE_MAX_S:
            # Free speech: one or two words said alone ("tres" at an open question) are mostly timestamp
            # tokens in the average, so their mean log-prob is low; kept as written.
            answer = map_answer(raw, self._expect)
        if answer is not None:
            log.info("whisper closed answer kept %s", kv(call_id=self._call_id, rejected=result.rejected,
                                                         kind=self._expect.kind))
        return answer or ""

    def reset(self) -> None:
        self._buf.clear()
        self._peeked = None

    def set_expect(self, expect: Expect) -> None:
        self._expect = expect

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        self._expect = replace(self._expect, phrases=tuple(phrases or ()))

    def close(self) -> None:
        self._buf.clear()


class WhisperRecognizer:
    """The process's Whisper provider: one shared model, one buffering decoder per call, decoding in `executor`."""

    name = "whisper"

    def __init__(self, model: WhisperModel, executor: Executor, config: StreamConfig,
                 metrics: EngineMetrics | None = None) -> None:
        self.model = model
        self._executor = executor
        self._config = config
        self._metrics = metrics
        self.backlog = DecodeBacklog(pool_size(executor))     # every call's finals wait in the one pool

    def stream(self, call_id: str, sample_rate: int) -> RecognizeStream:
        def factory() -> Decoder:
            return WhisperDecoder(self.model, sample_rate, call_id, self._metrics)
        s = RecognizeStream(factory, self._executor, self._config, sample_rate=sample_rate, call_id=call_id,
                            metrics=self._metrics, peek_digits=True, backlog=self.backlog)
        s.start()
        return s


def transcribe_text(model: WhisperModel, pcm: bytes, sample_rate: int) -> str:
    """Free-speech text of a recording as the live recognizer writes it (for `veratur asr transcribe`)."""
    return clean_text(model.transcribe(pcm, sample_rate).text)


def load_options(raw: dict[str, Any] | None) -> WhisperOptions:
    return WhisperOptions(**(raw or {}))
