"""Figures of a suite run: the text summary `veratur eval calls` prints, and a self-contained HTML report with
one inline-SVG chart per metric (task success, turn latency, WER) and the list of long portal utterances."""
from __future__ import annotations

import html
import statistics
from pathlib import Path
from typing import Any

from testkit.voice_eval.runner import LONG_UTTERANCE_S, ScriptResult, long_utterances


def summary(results: list[ScriptResult]) -> dict[str, Any]:
    played = [r for r in results if not r.skipped]
    latencies = [t.latency_ms for r in played for t in r.turns if t.latency_ms is not None and t.kind != "pause"]
    errors = sum(r.wer_counts[0] for r in played)
    words = sum(r.wer_counts[1] for r in played)
    return {
        "calls": len(played), "skipped": len(results) - len(played),
        "succeeded": sum(r.success for r in played),
        "task_success": (sum(r.success for r in played) / len(played)) if played else 0.0,
        "turns_timed": len(latencies),
        "latency_ms_median": statistics.median(latencies) if latencies else None,
        "latency_ms_p90": _percentile(latencies, 0.9),
        "latency_ms_max": max(latencies) if latencies else None,
        "wer": errors / words if words else None, "wer_words": words,
        "long_utterances": len(long_utterances(results)),
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def format_text(results: list[ScriptResult]) -> str:
    lines = []
    for r in results:
        if r.skipped:
            lines.append(f"SKIP {r.name}: {r.skipped}")
            continue
        errors, words = r.wer_counts
        wer = f"WER {errors}/{words}" if words else "WER -"
        lat = [t.latency_ms for t in r.turns if t.latency_ms is not None]
        lines.append(f"{'PASS' if r.success else 'FAIL'} {r.name} [{r.channel}] {len(r.turns)} turns, "
                     f"latency median {_ms(statistics.median(lat) if lat else None)}, {wer}, "
                     f"call {r.duration_s:.1f} s")
        for t in r.turns:
            if t.words:
                lines.append(f"     said {t.reference!r} -> heard {t.heard!r}")
        lines.extend(f"     ! {f}" for f in r.failures)
    s = summary(results)
    wer = "-" if s["wer"] is None else f"{100 * s['wer']:.1f} % of {s['wer_words']} words"
    lines.append(f"task success {s['succeeded']}/{s['calls']} ({100 * s['task_success']:.0f} %), "
                 f"{s['skipped']} skipped; turn latency median {_ms(s['latency_ms_median'])}, "
                 f"p90 {_ms(s['latency_ms_p90'])}, max {_ms(s['latency_ms_max'])} over {s['turns_timed']} turns; "
                 f"recognizer WER {wer}")
    rows = long_utterances(results)
    lines.append(f"portal utterances longer than {LONG_UTTERANCE_S:g} s: {len(rows)}")
    lines.extend(f"   {seconds:5.1f} s  {name}: {text[:120]}" for name, seconds, text in rows)
    return "\n".join(lines)


def _bars(title: str, rows: list[tuple[str, float, str]], unit: str, limit: float | None = None) -> str:
    """A horizontal bar chart: (label, value, colour) rows."""
    if not rows:
        return f"<h2>{html.escape(title)}</h2><p>no data</p>"
    top = max([v for _, v, _ in rows] + [limit or 0.0]) or 1.0
    width, left, bar_h = 640, 260, 18
    height = len(rows) * (bar_h + 6) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + left + 80}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">']
    for i, (label, value, colour) in enumerate(rows):
        y = 10 + i * (bar_h + 6)
        w = max(1.0, width * value / top)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="12">{html.escape(label)}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
                     f'<text x="{left + w + 4:.1f}" y="{y + 13}" font-size="12">{value:.3g} {unit}</text>')
    if limit is not None:
        x = left + width * limit / top
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#c00" stroke-dasharray="4"/>')
    parts.append("</svg>")
    return f"<h2>{html.escape(title)}</h2>" + "".join(parts)


def write_html(results: list[ScriptResult], path: Path, title: str = "Veratur voice regression suite") -> None:
    s = summary(results)
    played = [r for r in results if not r.skipped]
    success = [(r.name, 1.0 if r.success else 0.0, "#2a7" if r.success else "#c33") for r in played]
    latency = [(f"{r.name} #{i + 1} {t.kind}", t.latency_ms, "#47a") for r in played
               for i, t in enumerate(r.turns) if t.latency_ms is not None]
    wers = [(r.name, 100 * r.wer_counts[0] / r.wer_counts[1], "#a74") for r in played if r.wer_counts[1]]
    utter = [(f"{r.name}", secs, "#c33" if secs > LONG_UTTERANCE_S else "#888") for r in played
             for secs, _ in r.utterances]
    wer_text = "-" if s["wer"] is None else f"{100 * s['wer']:.1f} % ({s['wer_words']} words)"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>Task success <b>{s['succeeded']}/{s['calls']}</b> ({100 * s['task_success']:.0f} %), "
            f"{s['skipped']} skipped. Turn latency (end of caller speech or last key → first reply audio): median "
            f"{_ms(s['latency_ms_median'])}, p90 {_ms(s['latency_ms_p90'])}. Recognizer WER on the caller's "
            f"audio: {wer_text}.</p>",
            _bars("Task success per call", success, ""),
            _bars("Turn latency", latency, "ms"),
            _bars("Recognizer WER per call", wers, "%"),
            _bars(f"Portal utterances (seconds of audio; line at {LONG_UTTERANCE_S:g} s)", utter, "s",
                  LONG_UTTERANCE_S)]
    rows = long_utterances(results)
    body.append(f"<h2>Portal utterances longer than {LONG_UTTERANCE_S:g} s ({len(rows)})</h2><table border=1>"
                "<tr><th>script</th><th>seconds</th><th>what the portal said (committed transcript)</th></tr>")
    body.extend(f"<tr><td>{html.escape(n)}</td><td>{sec:.1f}</td><td>{html.escape(t)}</td></tr>" for n, sec, t in rows)
    body.append("</table><h2>Calls</h2>")
    for r in results:
        state = "skipped: " + r.skipped if r.skipped else ("pass" if r.success else "FAIL")
        body.append(f"<h3>{html.escape(r.name)} — {html.escape(state)}</h3><p>channel {html.escape(r.channel)}, "
                    f"call {html.escape(r.call_id)}</p><ul>")
        body.extend(f"<li>{html.escape(f)}</li>" for f in r.failures)
        for i, t in enumerate(r.turns, 1):
            heard = f" — said “{html.escape(t.reference)}”, heard “{html.escape(t.heard or '')}”" if t.words else ""
            body.append(f"<li>turn {i} {t.kind} {html.escape(t.value)}: latency {_ms(t.latency_ms)}{heard}</li>")
        body.append("</ul><ol>" + "".join(f"<li>{html.escape(p)}</li>" for p in r.portal_turns) + "</ol>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<!doctype html><html lang=en><meta charset=utf-8><title>" + html.escape(title) + "</title>"
                    "<body style='font-family:sans-serif;max-width:1100px'>" + "".join(body) + "</body></html>",
                    encoding="utf-8")
