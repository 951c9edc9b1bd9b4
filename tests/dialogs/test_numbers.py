"""The spoken-number normalizer: folios and PINs said digit by digit, in groups, as number words, or keyed."""
from __future__ import annotations

import pytest

from dialogs.actions.numbers import digit_runs, grouped_for_speech, spoken_digits, spoken_to_chars


@pytest.mark.parametrize(("said", "digits"), [
    ("ocho cuatro siete uno dos tres", "847123"),
    ("mi folio es ocho cuatro siete dos cero cero uno", "8472001"),
    ("84 71 23", "847123"),
    ("8-4-7", "847"),
    ("es el 847 120 03", "84712003"),
    ("veintitrés cuarenta y cinco", "2345"),
    ("ochenta y cuatro setenta y uno veintidós", "847122"),
    ("mil doscientos treinta y cuatro", "1234"),
    ("dos mil veinticinco", "2025"),
    ("cien", "100"),
    ("ciento uno", "101"),
    ("doble cero siete", "007"),
    ("Cuatro Tres CERO dos", "4302"),
    ("cuatro tres, cero dos. tres nueve cinco nueve", "43023959"),
    ("diez once doce", "101112"),
    ("4302 tres nueve cinco nueve", "43023959"),
    ("un número de folio es el uno cuatro dos cinco", "1425"),      # "un" before a word: an article
    ("uno un dos", "112"),                                           # before a number it is still 1
])
def test_spoken_digits(said: str, digits: str) -> None:
    assert spoken_digits(said) == digits


@pytest.mark.parametrize("said", ["no lo tengo", "quiero hablar con un asesor", "", "ocho cuatro perro"])
def test_not_a_number_gives_nothing(said: str) -> None:
    assert spoken_digits(said) == ""


@pytest.mark.parametrize(("said", "chars"), [
    ("erre ese cero nueve", "RS09"),
    ("los últimos cuatro son cinco dos hache ocho", "52H8"),
    ("ene a cero tres", "NA03"),
    ("doble ve i griega uno dos", "WY12"),
    ("pe e pe a nueve cero cero uno cero uno eme ve zeta erre erre ene cero nueve", "PEPA900101MVZRRN09"),
])
def test_letters_for_curp(said: str, chars: str) -> None:
    assert spoken_to_chars(said, letters=True) == chars


def test_letters_are_not_digits() -> None:
    assert spoken_digits("erre ese cero nueve") == ""


def test_grouped_for_speech() -> None:
    assert grouped_for_speech("43023959") == "4 3 0 2, 3 9 5 9"
    assert grouped_for_speech("5314", group=4) == "5 3 1 4"


@pytest.mark.parametrize(("said", "runs"), [
    ("quiero saber como va mi tramite mi folio es uno cuatro dos cinco cero tres uno seis", ["14250316"]),
    ("el folio es 1425 0316 por favor, y mi nip dos nueve cero tres", ["14250316", "2903"]),
    ("tengo una pregunta sobre mi licencia", []),
    ("oiga ochenta y cuatro setenta y uno veintidós gracias", ["847122"]),
])
def test_digit_runs_in_a_longer_turn(said: str, runs: list[str]) -> None:
    assert digit_runs(said) == runs
