"""Free recognizer text onto the answer the prompt expects (pure)."""
from __future__ import annotations

import pytest

from ivr.speech.answers import (
    best_phrase,
    budget_for,
    closed_answer,
    closed_forms,
    collapse_word_repeats,
    digits_in,
    map_answer,
    stray_words,
    yes_no,
)
from ivr.speech.expect import Expect
from ivr.speech.whisper import WhisperResult

DIGITS = Expect(kind="digits", max_digits=8)
MENU = Expect(kind="menu", phrases=("uno", "dos", "tres", "cero", "turismo", "trámites", "estado de mi trámite",
                                    "asesor"))
CITY = Expect(kind="city", phrases=("Papantla", "Xalapa", "Coatepec", "Tlacotalpan", "Veracruz"))


@pytest.mark.parametrize(("text", "digits"), [
    ("Cero, uno, dos, tres.", "0123"),
    ("2 1 7 4 5 6 7 6", "21745676"),
    ("21 74 56 76", "21745676"),
    ("veinte treinta y cuatro", "2034"),
    ("mi folio es el 1 4 1 4 9 5 0 1", "14149501"),
    ("diez, once, doce", "101112"),
])
def test_spoken_digits_become_the_digit_string(text: str, digits: str) -> None:
    assert map_answer(text, DIGITS) == digits


def test_words_that_are_not_digits_stay_words() -> None:
    assert map_answer("No lo tengo, quiero un asesor.", DIGITS) == "no lo tengo quiero un asesor"
    assert digits_in("ocho mil")[1] == 1


@pytest.mark.parametrize(("text", "answer"), [
    ("Sí.", "sí"), ("Sí, claro.", "sí"), ("Correcto", "sí"), ("No.", "no"), ("No, no es correcto.", "no"),
    ("Así es", "sí"),
])
def test_yes_no(text: str, answer: str) -> None:
    assert map_answer(text, Expect(kind="yes_no", phrases=("sí", "no", "repita", "asesor"))) == answer


def test_yes_no_leaves_other_answers() -> None:
    assert yes_no("Quiero hablar con alguien") is None
    assert map_answer("Un asesor por favor", Expect(kind="yes_no", phrases=("sí", "no", "asesor"))) == "asesor"


@pytest.mark.parametrize(("text", "answer"), [
    ("Tres.", "tres"), ("3", "tres"), ("La opción 2", "dos"), ("Turismo, por favor.", "turismo"),
    ("El estado de mi trámite", "estado de mi trámite"), ("Tramites", "trámites"),
])
def test_menu_words_and_option_numbers(text: str, answer: str) -> None:
    assert map_answer(text, MENU) == answer


@pytest.mark.parametrize(("text", "city"), [
    ("¿Qué hay que ver en Papantla?", "Papantla"), ("Jalapa", "Xalapa"), ("Tlacotalpán", "Tlacotalpan"),
    ("coatepek", "Coatepec"),
])
def test_city_names_match_fuzzily(text: str, city: str) -> None:
    assert map_answer(text, CITY) == city


def test_far_names_do_not_match() -> None:
    assert best_phrase("Monterrey", CITY.phrases) is None
    assert map_answer("Quiero ir a Monterrey", CITY) == "quiero ir a monterrey"


@pytest.mark.parametrize(("text", "answer"), [("3 3 3 3 3 3 3", "tres"), ("Sí, sí, sí.", "sí"), ("tres tres", "tres")])
def test_a_repeated_one_word_answer_is_one_answer(text: str, answer: str) -> None:
    kind = "yes_no" if answer == "sí" else "menu"
    assert map_answer(text, MENU if kind == "menu" else Expect(kind="yes_no")) == answer


def test_digit_strings_are_never_collapsed() -> None:
    assert collapse_word_repeats("tres tres tres") == "tres"
    assert map_answer("tres tres tres", Expect(kind="digits", max_digits=3)) == "333"


def test_closed_answer_accepts_only_valid_answers() -> None:
    assert closed_answer("Ocho.", MENU) == "ocho"
    assert closed_answer("¡Adiós!", MENU) is None
    assert closed_answer("No.", Expect(kind="yes_no")) == "no"
    assert closed_answer("12345", Expect(kind="digits", max_digits=4)) is None
    assert closed_answer("hola", Expect(kind="free")) is None


@pytest.mark.parametrize(("text", "answer", "expect", "stray"), [
    ("Un chau,", "uno", MENU, 1),                       # babble read as an article and a word
    ("Un chau,", "1", Expect(kind="digits", max_digits=1), 1),
    ("y un gran gran", "uno", MENU, 1),                 # "y" is a filler, "gran" repeated counts once
    ("La opción tres.", "tres", MENU, 0),
    ("3", "tres", MENU, 0),
    ("Estado de mi trámite.", "estado de mi trámite", MENU, 0),
    ("No, no.", "no", Expect(kind="yes_no"), 0),
    ("No es el amor,", "no", Expect(kind="yes_no"), 1),
])
def test_stray_words_are_what_the_answer_does_not_cover(text: str, answer: str, expect: Expect, stray: int) -> None:
    assert closed_answer(text, expect) == answer
    assert stray_words(text, answer, expect) == stray


def test_token_budget_follows_the_expected_answer() -> None:
    assert budget_for(Expect(kind="free")) is None
    assert budget_for(Expect(kind="digits", max_digits=8)) == 36
    assert budget_for(MENU) == 20


@pytest.mark.parametrize(("text", "digits"), [
    # callers read a folio in pairs: "diecisiete, sesenta y cinco, ...", and Whisper writes half of it in numerals
    ("diecisiete sesenta y cinco cuarenta y tres cincuenta y cuatro", "17654354"),
    ("14 26 80 40 y 3", "14268043"),
    ("veinte cinco", "25"),                       # veinticinco with its halves apart
    ("dieci seis, veinti tres", "1623"),
    ("diez y seis", "16"),
    ("doble cinco uno cero", "5510"),
    ("ciento veinte, cero cinco", "12005"),
    # misspellings of digit words on a noisy line, inside what is clearly a digit string
    ("fiete uno ojo seis cero dos uno cuatro", "71860214"),
    ("fiete ojo fiete cero", "7870"),
])
def test_digit_strings_as_callers_say_them(text: str, digits: str) -> None:
    assert map_answer(text, DIGITS) == digits


@pytest.mark.parametrize("text", ["No lo tengo, quiero un asesor.", "un nuevo trámite", "no sé cuál es"])
def test_sentences_near_digit_words_stay_words(text: str) -> None:
    assert not map_answer(text, DIGITS).isdigit()


def _result(text: str, logprob: float, *alts: tuple[str, float]) -> WhisperResult:
    return WhisperResult(text, text, logprob, 0.0, 1.0, 10, 3.0, 0.5, alternatives=alts)


def test_a_beam_reading_with_the_expected_digit_count_is_preferred() -> None:
    from ivr.speech.whisper import pick_digits
    # the best reading dropped a digit; the next one has all eight
    heard = _result("1765436", -0.30, ("17654354", -0.45), ("176543544", -0.5))
    assert pick_digits("1765436", heard, DIGITS) == "17654354"
    # a reading far below the best is not taken, and words (the caller said something else) stay words
    assert pick_digits("1765436", _result("1765436", -0.30, ("17654354", -1.2)), DIGITS) == "1765436"
    assert pick_digits("no lo tengo", _result("no lo tengo", -0.3, ("17654354", -0.35)), DIGITS) == "no lo tengo"
    assert pick_digits("21745676", _result("21745676", -0.3, ("21745670", -0.31)), DIGITS) == "21745676"


@pytest.mark.parametrize("expect", [MENU, CITY, Expect(kind="yes_no"), Expect(kind="menu", phrases=("asesor", "cero", "no")),
                                    Expect(kind="menu", phrases=("turismo", "asesor"))])
def test_every_rescoring_form_maps_back_to_its_answer(expect: Expect) -> None:
    # a forced answer must be one the free decode could have given: each form reads as that answer
    forms = closed_forms(expect)
    assert forms
    for answer, written in forms.items():
        assert written and all(closed_answer(f, expect) == answer for f in written), (answer, written)


def test_rescoring_forms_of_a_menu() -> None:
    forms = closed_forms(MENU)
    assert forms["tres"] == ("Tres.", "3.", "El tres.", "La opción tres.")
    assert forms["estado de mi trámite"] == ("Estado de mi trámite.",)
    # options named by number in the phrases: only those numbers; none named: every option number
    assert "cuatro" not in forms
    assert set(closed_forms(Expect(kind="menu", phrases=("turismo",)))) == {
        "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "turismo"}
    assert set(closed_forms(Expect(kind="yes_no", phrases=("sí", "no")))) == {"sí", "no"}
    assert set(closed_forms(CITY)) == set(CITY.phrases)


@pytest.mark.parametrize("kind", ["free", "none"])
def test_no_rescoring_forms_for_open_prompts(kind: str) -> None:
    assert closed_forms(Expect(kind=kind, phrases=("uno",))) == {}  # type: ignore[arg-type]


def test_rescoring_forms_of_digit_prompts() -> None:
    # one key: the ten digits, each as its word and its numeral; a folio or PIN (several digits): none
    one_key = closed_forms(Expect(kind="digits", max_digits=1))
    assert one_key["3"] == ("Tres.", "3.") and sorted(one_key) == [str(d) for d in range(10)]
    assert closed_forms(Expect(kind="digits", max_digits=8)) == {}
