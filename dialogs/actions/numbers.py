"""Turn what a caller said or keyed into the digits (and letters) of a folio, a PIN or the end of a CURP.

Callers say numbers every way: digit by digit ("ocho cuatro siete"), in pairs or groups ("ochenta y cuatro,
setenta y uno"), mixed with figures from the recognizer ("847 uno dos"), with fillers ("es el", "mi folio es").
Each number word or figure contributes its digits in the order spoken, so "veintitrés cuarenta y cinco" is
"2345" and "mil doscientos treinta y cuatro" is "1234". CURP endings also carry letters, said by their Spanish
names ("erre ese cero nueve" -> "RS09").
"""
from __future__ import annotations

import re
import unicodedata

_UNITS = {
    "cero": 0, "uno": 1, "una": 1, "un": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7,
    "ocho": 8, "nueve": 9, "diez": 10, "once": 11, "doce": 12, "trece": 13, "catorce": 14, "quince": 15,
    "dieciseis": 16, "diecisiete": 17, "dieciocho": 18, "diecinueve": 19, "veinte": 20, "veintiuno": 21,
    "veintiun": 21, "veintiuna": 21, "veintidos": 22, "veintitres": 23, "veinticuatro": 24, "veinticinco": 25,
    "veintiseis": 26, "veintisiete": 27, "veintiocho": 28, "veintinueve": 29,
}
_TENS = {"treinta": 30, "cuarenta": 40, "cincuenta": 50, "sesenta": 60, "setenta": 70, "ochenta": 80,
         "noventa": 90}
_HUNDREDS = {"cien": 100, "ciento": 100, "doscientos": 200, "doscientas": 200, "trescientos": 300,
             "trescientas": 300, "cuatrocientos": 400, "cuatrocientas": 400, "quinientos": 500, "quinientas": 500,
             "seiscientos": 600, "seiscientas": 600, "setecientos": 700, "setecientas": 700,
             "ochocientos": 800, "ochocientas": 800, "novecientos": 900, "novecientas": 900}
_LETTERS = {
    "a": "A", "be": "B", "ce": "C", "de": "D", "e": "E", "efe": "F", "ge": "G", "hache": "H", "i": "I",
    "jota": "J", "ka": "K", "ele": "L", "eme": "M", "ene": "N", "ene_": "Ñ", "o": "O", "pe": "P", "cu": "Q",
    "erre": "R", "ere": "R", "ese": "S", "te": "T", "u": "U", "ve": "V", "uve": "V", "equis": "X", "ye": "Y",
    "zeta": "Z", "seta": "Z",
}
_TWO_WORD_LETTERS = {("doble", "ve"): "W", ("doble", "u"): "W", ("i", "griega"): "Y", ("ve", "chica"): "V",
                     ("be", "grande"): "B", ("be", "larga"): "B", ("ve", "corta"): "V"}
_FILLERS = frozenset({
    "y", "es", "el", "la", "los", "las", "mi", "su", "folio", "numero", "nip", "pin", "curp", "son", "sus",
    "digitos", "caracteres", "termina", "en", "de", "mis", "con", "guion",
    "espacio", "coma", "punto", "gato", "numeral", "asterisco", "este", "pues", "eh", "mmm", "a", "ver", "seria",
    "letra", "que", "o", "sea", "bueno", "clave", "codigo",
})
_TOKEN = re.compile(r"[a-z]+|\d+")
_ARTICLES = frozenset({"un", "una"})
"""'un'/'una' before a word that is not a number is an article ("un número de folio"), not a digit."""
_NUMBER_TOKENS = frozenset(_UNITS) | frozenset(_TENS) | frozenset(_HUNDREDS) | {"mil", "doble", "ultimos", "ultimas"}


def _is_number_word(word: str) -> bool:
    return word.isdigit() or word in _NUMBER_TOKENS


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _number_words(words: list[str], i: int) -> tuple[str, int] | None:
    """Read one spoken number starting at words[i] (up to 9999); return its digits and the next index."""
    value, used = 0, False
    if i < len(words) and words[i] == "mil":
        value, used, i = 1000, True, i + 1
    elif i + 1 < len(words) and words[i] in _UNITS and _UNITS[words[i]] < 10 and words[i + 1] == "mil":
        value, used, i = _UNITS[words[i]] * 1000, True, i + 2
    if i < len(words) and words[i] in _HUNDREDS:
        value, used, i = value + _HUNDREDS[words[i]], True, i + 1
    if i < len(words) and words[i] in _TENS:
        value += _TENS[words[i]]
        used, i = True, i + 1
        if i + 1 < len(words) and words[i] == "y" and words[i + 1] in _UNITS and _UNITS[words[i + 1]] < 10:
            value, i = value + _UNITS[words[i + 1]], i + 2
    elif i < len(words) and words[i] in _UNITS and (used or _UNITS[words[i]] >= 10):
        value, used, i = value + _UNITS[words[i]], True, i + 1
    if not used:
        return None
    return str(value), i


def spoken_to_chars(text: str, letters: bool = False) -> str:
    """The digits (and with `letters`, the letters) a caller said or keyed, in order; fillers are skipped.

    Returns "" when something that is neither a number, a letter nor a filler was said: the answer was not
    a number at all (e.g. "no lo tengo a la mano")."""
    words = _TOKEN.findall(_plain(text))
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("ultimos", "ultimas") and i + 1 < len(words) and words[i + 1] in ("cuatro", "4"):
            i += 2   # "los últimos cuatro son ..." names the count, it is not part of the answer
            continue
        if word.isdigit():
            out.append(word)
            i += 1
            continue
        if word == "doble" and i + 1 < len(words) and words[i + 1] in _UNITS and _UNITS[words[i + 1]] < 10 \
                and not letters:
            out.append(str(_UNITS[words[i + 1]]) * 2)   # "doble cero" -> 00
            i += 2
            continue
        if letters and i + 1 < len(words) and (word, words[i + 1]) in _TWO_WORD_LETTERS:
            out.append(_TWO_WORD_LETTERS[(word, words[i + 1])])
            i += 2
            continue
        if word in _ARTICLES and i + 1 < len(words) and not _is_number_word(words[i + 1]):
            i += 1   # "tengo un número", "una pregunta": an article, not the digit 1
            continue
        if word in _UNITS and _UNITS[word] < 10:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if nxt != "mil":
                out.append(str(_UNITS[word]))
                i += 1
                continue
        read = _number_words(words, i)
        if read is not None:
            out.append(read[0])
            i = read[1]
            continue
        if letters and word in _LETTERS:
            out.append(_LETTERS[word])
            i += 1
            continue
        if letters and len(word) == 1:
            out.append(word.upper())
            i += 1
            continue
        if word in _FILLERS:
            i += 1
            continue
        return ""
    return "".join(out)


def spoken_digits(text: str) -> str:
    """Only digits: '' if the text holds anything else than numbers and fillers."""
    chars = spoken_to_chars(text)
    return chars if chars.isdigit() else ""


def grouped_for_speech(chars: str, group: int = 4) -> str:
    """'12345678' -> '1 2 3 4, 5 6 7 8': one character per word, a pause between groups, for slow TTS."""
    groups = [chars[i:i + group] for i in range(0, len(chars), group)]
    return ", ".join(" ".join(g) for g in groups)


def digit_runs(text: str) -> list[str]:
    """The digits of each stretch of numbers (with their fillers) in a longer turn, in order: "quiero saber cómo
    va mi trámite, mi folio es uno cuatro dos cinco cero tres uno seis" -> ["14250316"]. Words that are
    neither numbers nor fillers end a stretch; stretches without digits are left out."""
    runs: list[list[str]] = [[]]
    for word in _TOKEN.findall(_plain(text)):
        if _is_number_word(word) or word in _FILLERS or word in _ARTICLES:
            runs[-1].append(word)
            continue
        while runs[-1] and runs[-1][-1] in _ARTICLES:
            runs[-1].pop()          # "una pregunta": the article of the word that ends the stretch
        if runs[-1]:
            runs.append([])
    out = []
    for run in runs:
        digits = spoken_to_chars(" ".join(run))
        if digits.isdigit():
            out.append(digits)
    return out
