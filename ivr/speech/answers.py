"""Closed answers from free text: a recognizer without grammars (Whisper) writes what it heard ("Cero, uno, dos.",
"21 74", "Sí, claro.", "Papantla"); the dialogue expects a digit string, "sí"/"no", a menu word or a city name.
`map_answer(text, expect)` turns the first into the second when it can, and leaves the text alone when the caller
said something else (asked for an agent, said "no sé"), so the dialogue still sees it. Pure functions.
"""
from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Sequence

from ivr.speech.expect import Expect

_DIGIT_WORDS = {
    "cero": "0", "uno": "1", "una": "1", "un": "1", "dos": "2", "tres": "3", "cuatro": "4", "cinco": "5",
    "seis": "6", "siete": "7", "ocho": "8", "nueve": "9",
}
# Numbers a caller may say while reading digits in pairs ("veinte", "treinta y cuatro", "diez").
_TEENS = {
    "diez": 10, "once": 11, "doce": 12, "trece": 13, "catorce": 14, "quince": 15, "dieciseis": 16,
    "diecisiete": 17, "dieciocho": 18, "diecinueve": 19, "veinte": 20, "veintiuno": 21, "veintidos": 22,
    "veintitres": 23, "veinticuatro": 24, "veinticinco": 25, "veintiseis": 26, "veintisiete": 27,
    "veintiocho": 28, "veintinueve": 29,
}
_TENS = {"treinta": 30, "cuarenta": 40, "cincuenta": 50, "sesenta": 60, "setenta": 70, "ochenta": 80,
         "noventa": 90}
_YES = {"si", "claro", "correcto", "afirmativo", "exacto", "asi es", "de acuerdo", "esta bien", "ok", "okay",
        "sale", "va", "por supuesto", "eso es"}
_NO = {"no", "negativo", "no es correcto", "incorrecto", "para nada", "nel"}
_FILLERS = {"e", "eh", "este", "mmm", "em", "pues", "a", "ver", "es", "el", "mi", "numero", "folio", "y", "o",
            "guion", "espacio", "son", "los", "digitos", "la", "opcion", "marco", "marque", "por", "favor"}
FUZZY_CUTOFF = 0.8        # difflib ratio a city or menu word must reach to count as that phrase


def fold(text: str) -> str:
    """Lower case, accents and punctuation removed, spaces collapsed (how answers are compared)."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    plain = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return " ".join(re.findall(r"[a-z0-9ñ]+", plain))


def clean_text(text: str) -> str:
    """Recognizer text as the dialogue gets it: lower case, accents kept, punctuation removed."""
    return " ".join(re.findall(r"[\wáéíóúüñ]+", text.lower()))


_HUNDREDS = {"cien": 100, "ciento": 100, "doscientos": 200, "trescientos": 300, "cuatrocientos": 400,
             "quinientos": 500, "seiscientos": 600, "setecientos": 700, "ochocientos": 800, "novecientos": 900}
_REPEAT = {"doble": 2, "triple": 3}
# Halves of a number a recognizer wrote apart ("dieci seis", "veinti tres") and the old "diez y seis".
_PREFIXES = {"dieci": 10, "veinti": 20}


def _unit(word: str | None) -> str | None:
    """The single digit `word` stands for ("cinco", "5"), else None."""
    if word is None:
        return None
    if len(word) == 1 and word.isdigit():
        return word
    return _DIGIT_WORDS.get(word)


def _tens(word: str) -> int | None:
    """20..90 said as a word ("ochenta") or written as a numeral ("80"); "veinte" counts (veinte y tres)."""
    if word in _TENS:
        return _TENS[word]
    if word == "veinte":
        return 20
    if len(word) == 2 and word.isdigit() and word[1] == "0" and word[0] >= "2":
        return int(word)
    return None


_NUMBER_VOCAB = (*_DIGIT_WORDS, *_TEENS, *_TENS, *_HUNDREDS, *_REPEAT)
FUZZY_DIGIT_CUTOFF = 0.75     # "fiete" -> siete, "tero" -> cero, "sequenta" -> setenta (Whisper on noisy lines)
FUZZY_MIN_EXACT = 2           # digits heard exactly before a near word counts among others that are not numbers


_SOUND_TABLE = str.maketrans("jzfcv", "xsskb", "h")


def sound_key(word: str) -> str:
    """A rough Spanish sound key, so spellings of one sound compare equal: ch/j/g(e,i)/x -> x ("ojo" ~ "ocho"),
    c(e,i)/z/f -> s ("fiete" ~ "siete", a band-limited line blurs f and s), qu/k/c -> k, v -> b, ll/y -> y,
    h silent."""
    w = word.replace("ch", "x").replace("qu", "k").replace("ll", "y")
    w = re.sub(r"[cg](?=[ei])", lambda m: "s" if m.group(0) == "c" else "x", w)
    return w.translate(_SOUND_TABLE)


def as_written(word: str) -> str:
    """The key of `NearWords` that compares words as they are spelled."""
    return word


class NearWords:
    """A recognizer's misspellings of a few known words: `match(word)` is the known word with the same `key`
    ("fiete" ~ "siete" by `sound_key`), or, for a word of 4+ letters, the one whose key is at a difflib ratio >=
    `cutoff` (the best), else None. Where two callers differ (which words, how compared, how close), they say
    so here, not in a copy: the answer mapping and Whisper's repetition guards both use it."""

    MIN_FUZZY_LETTERS = 4     # shorter words are too close to too many others for a ratio to mean anything

    def __init__(self, words: Sequence[str], *, cutoff: float, key: Callable[[str], str] = sound_key) -> None:
        self.cutoff = cutoff
        self.key = key
        self._table = {key(w): w for w in reversed(words)}     # two words with one key: the first listed wins
        self._keys = list(self._table)

    def match(self, word: str) -> str | None:
        key = self.key(word)
        if key in self._table:
            return self._table[key]
        if len(word) < self.MIN_FUZZY_LETTERS:
            return None
        close = difflib.get_close_matches(key, self._keys, n=1, cutoff=self.cutoff)
        return self._table[close[0]] if close else None


# digits, teens and tens only: "cien" or "doble" guessed from a near word would add digits out of nothing
_NEAR_NUMBERS = NearWords((*_DIGIT_WORDS, *_TEENS, *_TENS), cutoff=FUZZY_DIGIT_CUTOFF)


def _near_number_word(word: str) -> str:
    """The number word `word` is a misspelling of (3+ letters with the same sound key, or 4+ letters whose key
    is at a difflib ratio >= FUZZY_DIGIT_CUTOFF), else `word`."""
    if len(word) < 3 or not word.isalpha() or word in _NUMBER_VOCAB or word in _FILLERS:
        return word
    return _NEAR_NUMBERS.match(word) or word


def digits_in(text: str, *, fuzzy: bool = False) -> tuple[str, int]:
    """(digit string, words that were neither digits nor fillers) read from `text`: "cero uno dos" -> "012",
    "21 74" -> "2174", "veinte treinta y cuatro" -> "2034", "50 y 4" -> "54", "doble cinco" -> "55",
    "dieci seis" -> "16", "ciento veinte" -> "120", "ocho mil" -> ("8", 1). With `fuzzy`, a word that is not a
    number but spelled like one ("fiete") counts as that number when the rest is clearly a digit string."""
    digits, other = _parse_digits(fold(text).split())
    if fuzzy and other and digits:
        near = _parse_digits([_near_number_word(w) for w in fold(text).split()])
        # kept when the rest is clearly a digit string: enough digits heard exactly, or nothing left over
        if near[1] < other and (len(digits) >= FUZZY_MIN_EXACT or near[1] == 0):
            return near
    return digits, other


def _parse_digits(words: list[str]) -> tuple[str, int]:
    out: list[str] = []
    other = 0
    i = 0

    def at(k: int) -> str | None:
        return words[k] if k < len(words) else None

    while i < len(words):
        w = words[i]
        tens = _tens(w)
        if tens is not None and at(i + 1) == "y" and _unit(at(i + 2)) is not None:
            out.append(str(tens + int(_unit(at(i + 2)) or 0)))        # "ochenta y cinco", "50 y 4"
            i += 3
            continue
        if tens is not None and not w.isdigit() and at(i + 1) in _DIGIT_WORDS and at(i + 1) != "cero":
            # a tens word says the caller reads pairs: "veinte cinco" is veinticinco with the halves apart,
            # "cuarenta cinco" a swallowed "y"
            out.append(str(tens + int(_DIGIT_WORDS[at(i + 1) or ""])))
            i += 2
            continue
        if w in _REPEAT and _unit(at(i + 1)) is not None:
            out.append((_unit(at(i + 1)) or "") * _REPEAT[w])           # "doble cinco" -> 55
            i += 2
            continue
        if w in _PREFIXES and _unit(at(i + 1)) is not None:
            out.append(str(_PREFIXES[w] + int(_unit(at(i + 1)) or 0)))  # "dieci seis" -> 16
            i += 2
            continue
        if w == "diez" and at(i + 1) == "y" and _unit(at(i + 2)) not in (None, "0"):
            out.append(str(10 + int(_unit(at(i + 2)) or 0)))            # "diez y seis" -> 16
            i += 3
            continue
        if w in _HUNDREDS:
            value = _HUNDREDS[w]
            rest = at(i + 1)
            i += 1
            if rest is not None and w != "cien":
                low, used = _below_hundred(words, i)
                if used:
                    value += low
                    i += used
            out.append(str(value))
            continue
        if w.isdigit():
            out.append(w)
        elif w in _DIGIT_WORDS:
            out.append(_DIGIT_WORDS[w])
        elif w in _TEENS:
            out.append(str(_TEENS[w]))
        elif tens is not None:
            out.append(str(tens))
        elif w == "veintiun":
            out.append("21")
        elif w not in _FILLERS:
            other += 1
        i += 1
    return "".join(out), other


def _below_hundred(words: list[str], i: int) -> tuple[int, int]:
    """(value 1..99, words used) of the number words at `words[i:]` after "ciento"/"doscientos"..., else (0, 0)."""
    w = words[i] if i < len(words) else ""
    tens = _TENS.get(w)
    if tens is not None:
        if i + 2 < len(words) and words[i + 1] == "y" and words[i + 2] in _DIGIT_WORDS:
            return tens + int(_DIGIT_WORDS[words[i + 2]]), 3
        return tens, 1
    if w in _TEENS:
        return _TEENS[w], 1
    if w in _DIGIT_WORDS and w != "cero":
        return int(_DIGIT_WORDS[w]), 1
    return 0, 0


def yes_no(text: str) -> str | None:
    """"sí" or "no" when the answer is one (a "no" anywhere wins: "sí, no, no es correcto"), else None."""
    folded = fold(text)
    words = folded.split()
    if not words:
        return None
    if "no" in words or any(p in folded for p in _NO if " " in p):
        return "no"
    if any(w in _YES for w in words) or any(p in folded for p in _YES if " " in p):
        return "sí"
    return None


def best_phrase(text: str, phrases: Sequence[str], cutoff: float = FUZZY_CUTOFF) -> str | None:
    """The phrase of `phrases` the text names: contained word for word, else the closest by spelling among the
    text's n-grams (n = the phrase's word count) when at least `cutoff` similar."""
    folded = fold(text)
    if not folded:
        return None
    words = folded.split()
    best: tuple[float, int, str] | None = None
    for phrase in phrases:
        target = fold(phrase)
        if not target:
            continue
        if re.search(rf"(?<![a-z0-9]){re.escape(target)}(?![a-z0-9])", folded):
            score = 1.0
        else:
            n = len(target.split())
            grams = [" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))]
            score = max(difflib.SequenceMatcher(None, target, g).ratio() for g in grams)
        # Longer phrases win ties ("estado de mi trámite" over "trámite").
        candidate = (score, len(target), phrase)
        if score >= cutoff and (best is None or candidate[:2] > best[:2]):
            best = candidate
    return best[2] if best else None


_NUMBER_NAMES = {v: k for k, v in _DIGIT_WORDS.items() if k not in ("una", "un")}
CLOSED_KINDS = ("yes_no", "menu", "city")     # one short answer: a repeated word is one answer said once


def collapse_word_repeats(text: str) -> str:
    """One word said once, not Whisper's loop on it: "3 3 3 3" -> "3", "sí, sí" -> "sí" (immediate repeats of
    a single word only; a digit string is never collapsed here, use it for one-word answers)."""
    out: list[str] = []
    for word in text.split():
        if out and fold(out[-1]) == fold(word) and fold(word):
            continue
        out.append(word)
    return " ".join(out)


def closed_answer(text: str, expect: Expect) -> str | None:
    """The valid answer `text` gives to a closed prompt (a menu phrase or option number, sí/no, a city, a digit
    string of at most `max_digits`), or None when it is not one."""
    if expect.kind not in (*CLOSED_KINDS, "digits"):
        return None
    mapped = map_answer(text, expect)
    if not mapped:
        return None
    if expect.kind == "digits":
        return mapped if mapped.isdigit() and len(mapped) <= max(expect.max_digits, 1) else None
    if expect.kind == "yes_no" and mapped in ("sí", "no"):
        return mapped
    if mapped in expect.phrases:
        return mapped
    if expect.kind == "menu" and mapped in _NUMBER_NAMES.values():
        return mapped
    return None


def stray_words(text: str, answer: str, expect: Expect) -> int:
    """How many words of the reading `text` are no part of its closed answer `answer`: not a filler, not a word of
    the answer, not a word that alone gives the same answer ("Un chau," -> "uno": "chau" is stray; "La opción
    tres." and "No, no." have none). A repeated word counts once."""
    target = set(fold(answer).split())
    stray = 0
    for word in fold(collapse_word_repeats(clean_text(text))).split():
        if word in _FILLERS or word in target or closed_answer(word, expect) == answer:
            continue
        stray += 1
    return stray


def budget_for(expect: Expect) -> int | None:
    """Most text tokens the expected answer needs (Whisper's decode stops there), None for free speech: a menu
    word or sí/no is a few tokens even inside a short sentence; a digit word is ~3 tokens with its comma."""
    if expect.kind == "digits":
        return 3 * max(expect.max_digits, 1) + 12
    if expect.kind in CLOSED_KINDS:
        return 20
    return None


def map_answer(text: str, expect: Expect) -> str:
    """What the dialogue receives for `text` when it expects `expect` (see the module docstring)."""
    cleaned = clean_text(text)
    if not cleaned:
        return ""
    kind = expect.kind
    if kind in CLOSED_KINDS:
        cleaned = collapse_word_repeats(cleaned)
    if kind == "digits":
        digits, other = digits_in(cleaned, fuzzy=True)
        # Mostly digits: the digit string. Words besides digits ("no lo tengo", "asesor"): the words.
        if digits and other <= max(1, len(digits) // 4):
            return digits
        return cleaned
    if kind == "yes_no":
        answer = yes_no(cleaned)
        if answer is not None:
            return answer
    if expect.phrases:
        phrase = best_phrase(cleaned, expect.phrases)
        if phrase is not None:
            return phrase
    if kind == "menu":
        # "tres" where the prompt says "marque tres", or "3": the option's number as a word, as the menus match it.
        digits, other = digits_in(cleaned)
        if len(digits) == 1 and other <= 1:
            return _NUMBER_NAMES[digits]
    return cleaned


# ---- the valid answers of a closed prompt, as Whisper would write them (grammar rescoring) --------------------

_YES_NO_FORMS = {"sí": ("Sí.", "Si."), "no": ("No.",)}


def _sentence(text: str) -> str:
    """`text` as Whisper writes a one-phrase utterance: capital first letter, a full stop."""
    return text[:1].upper() + text[1:] + "."


def closed_forms(expect: Expect) -> dict[str, tuple[str, ...]]:
    """What a closed prompt accepts (menu, yes_no, city, a one-key digit prompt): each answer the dialogue would receive (`map_answer`),
    with the few written forms Whisper would give for it. `ivr.speech.whisper` scores each form against the
    audio when the free decode gave no valid answer. Only forms `closed_answer` maps back to that same answer
    are listed, so a forced answer is one the free decode could have given: a menu option number "tres" as
    "Tres.", "3.", "El tres.", "La opción tres."; sí/no; a phrase or city as written. Empty for other kinds."""
    out: dict[str, tuple[str, ...]] = {}
    if expect.kind == "digits" and expect.max_digits == 1:
        # a prompt for one key ("marque o diga un número") is a closed set of ten answers
        forms = {d: (_sentence(name), f"{d}.") for d, name in sorted(_NUMBER_NAMES.items())}
        return {d: kept for d, fs in forms.items() if (kept := tuple(f for f in fs if closed_answer(f, expect) == d))}
    if expect.kind == "yes_no":
        out.update(_YES_NO_FORMS)
    if expect.kind not in CLOSED_KINDS:
        return {}
    folded_phrases = {fold(p) for p in expect.phrases}
    numbers = [d for d, name in sorted(_NUMBER_NAMES.items()) if name in folded_phrases]
    if expect.kind == "menu" and not numbers:
        numbers = sorted(_NUMBER_NAMES)          # a menu whose options are named by their keys only
    for digit in numbers if expect.kind == "menu" else ():
        name = _NUMBER_NAMES[digit]
        out[name] = (_sentence(name), f"{digit}.", f"El {name}.", f"La opción {name}.")
    for phrase in expect.phrases:
        answer = closed_answer(phrase, expect)
        if answer is None or answer in out:
            continue
        out[answer] = (_sentence(phrase),)
    # keep only forms that map back to their answer (a form the mapping reads otherwise would be a wrong answer)
    return {a: kept for a, forms in out.items() if (kept := tuple(f for f in forms if closed_answer(f, expect) == a))}
