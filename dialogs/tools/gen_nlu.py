"""Expand the NLU templates below into nlu_data/train/nlu.yml (the training split).

Why a generator: tourism and trámite questions are the same few sentence shapes crossed with 12 cities (and
their ASR spellings) and ~40 procedure names; writing the product by hand drifts. The generated YAML is
committed and stays editable; the held-out test split (nlu_data/test/) is written by hand with other wordings
and is never produced here. Run: `.venv/bin/python dialogs/tools/gen_nlu.py`.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "nlu_data" / "train" / "nlu.yml"

# (what the caller / the recognizer may say, canonical city)
CITY_FORMS: list[tuple[str, str]] = [
    ("Xalapa", "Xalapa"), ("xalapa", "Xalapa"), ("Jalapa", "Xalapa"), ("jalapa", "Xalapa"),
    ("Veracruz", "Veracruz"), ("el puerto", "Veracruz"), ("el puerto de Veracruz", "Veracruz"),
    ("veracruz puerto", "Veracruz"), ("Boca del Río", "Boca del Río"), ("boca del rio", "Boca del Río"),
    ("Boca", "Boca del Río"), ("Coatepec", "Coatepec"), ("coatepec", "Coatepec"), ("Xico", "Xico"),
    ("xico", "Xico"), ("Jico", "Xico"), ("Papantla", "Papantla"), ("papantla", "Papantla"),
    ("El Tajín", "Papantla"), ("Tajín", "Papantla"), ("tajin", "Papantla"), ("Orizaba", "Orizaba"),
    ("orizaba", "Orizaba"), ("Córdoba", "Córdoba"), ("cordoba", "Córdoba"), ("Tlacotalpan", "Tlacotalpan"),
    ("tlacotalpan", "Tlacotalpan"), ("Catemaco", "Catemaco"), ("catemaco", "Catemaco"),
    ("Coatzacoalcos", "Coatzacoalcos"), ("coatzacoalcos", "Coatzacoalcos"), ("Coatza", "Coatzacoalcos"),
    ("Tuxpan", "Tuxpan"), ("tuxpan", "Tuxpan"), ("Tuxpam", "Tuxpan"),
]

TRAMITES = [
    "licencia de conducir", "licencia", "licencia de manejo", "licencia de chofer", "licencia de motociclista",
    "placas", "alta de placas", "reemplacamiento", "refrendo vehicular", "refrendo", "tenencia",
    "cambio de propietario", "baja de placas", "tarjeta de circulación", "permiso para circular sin placas",
    "acta de nacimiento", "copia certificada del acta de nacimiento", "acta de matrimonio", "acta de defunción",
    "acta", "constancia de antecedentes no penales", "carta de no antecedentes penales", "antecedentes penales",
    "registro de nacimiento", "divorcio administrativo", "certificado de libertad de gravamen",
    "inscripción en el registro público de la propiedad", "licencia de funcionamiento", "impuesto sobre nómina",
    "constancia de no inhabilitación", "certificado de estudios", "duplicado de certificado",
    "legalización de firmas", "apostilla", "registro de título profesional", "cédula", "pasaporte",
    "permiso de pesca", "revista vehicular", "verificación vehicular",
]


def city(form: tuple[str, str]) -> str:
    text, value = form
    return f"[{text}](city)" if text == value else f'[{text}]{{"entity": "city", "value": "{value}"}}'


def tram(name: str) -> str:
    return f"[{name}](tramite)"


TOURISM = {
    "ask_attractions": [
        "¿qué hay que ver en {c}?", "qué lugares puedo visitar en {c}", "¿qué atractivos tiene {c}?",
        "qué se puede hacer en {c}", "¿qué me recomienda conocer en {c}?", "lugares turísticos de {c}",
        "quiero conocer {c}, ¿qué hay?", "qué visitar en {c}", "¿cuáles son los atractivos de {c}?",
        "voy a ir a {c}, ¿qué puedo ver?", "sitios de interés en {c}", "qué hay para visitar en {c}",
        "museos y lugares bonitos de {c}", "¿qué paseos hay en {c}?",
    ],
    "ask_food": [
        "¿qué se come en {c}?", "comida típica de {c}", "¿cuál es el platillo típico de {c}?",
        "qué puedo comer en {c}", "¿qué es lo típico para comer en {c}?", "gastronomía de {c}",
        "qué platillos hay en {c}", "dónde como algo típico en {c}", "¿qué comida me recomienda en {c}?",
        "quiero probar la comida de {c}", "¿qué dulces típicos hay en {c}?", "qué se desayuna en {c}",
    ],
    "ask_festivals": [
        "¿cuándo es la feria de {c}?", "fiestas de {c}", "¿qué festivales hay en {c}?",
        "cuándo son las fiestas patronales de {c}", "¿hay carnaval en {c}?", "eventos y ferias en {c}",
        "¿qué celebraciones tiene {c}?", "en qué mes es la fiesta de {c}", "festividades de {c}",
        "¿cuándo es el festival de {c}?", "tradiciones y fiestas en {c}",
    ],
    "ask_access": [
        "¿cómo llego a {c}?", "cómo llegar a {c}", "¿cómo me voy a {c}?", "qué carretera tomo para {c}",
        "¿cómo llego a {c} desde {c2}?", "cómo llegar a {c} desde {c2}", "¿hay autobús a {c}?",
        "¿a qué distancia está {c}?", "¿cuánto se hace de camino a {c}?", "ruta para ir a {c}",
        "voy de {c2} a {c}, ¿cómo llego?", "cómo me voy de {c2} a {c}", "en camión cómo llego a {c}",
        "¿cuántas horas son de {c2} a {c}?", "¿qué tan lejos está {c}?", "¿cuánto tiempo de viaje hay a {c}?",
    ],
    "ask_tourist_office": [
        "¿dónde está la oficina de turismo de {c}?", "módulo de información turística en {c}",
        "¿hay oficina de turismo en {c}?", "teléfono de turismo de {c}", "información turística de {c}, ¿a dónde voy?",
        "oficina de turismo {c}", "¿con quién pido informes turísticos en {c}?", "dónde piden informes en {c}",
        "¿dónde me dan un mapa de {c}?",
    ],
}

FOLLOWUPS = {
    "ask_attractions": ["¿y qué hay que ver ahí?", "¿y qué lugares hay para visitar?", "¿y qué puedo conocer allá?",
                        "y qué atractivos tiene", "¿qué más hay para ver?"],
    "ask_food": ["¿y qué se come ahí?", "¿y la comida típica?", "y qué platillos hay", "¿qué se come allá?",
                 "¿y qué me recomienda comer?"],
    "ask_festivals": ["¿y cuándo es la feria?", "¿y qué fiestas tienen?", "y las fiestas", "¿hay algún festival?",
                      "¿cuándo es el carnaval?", "¿cuándo es la fiesta de la Candelaria?",
                      "cuándo es la cumbre tajín", "¿cuándo son las fiestas de la virgen?"],
    "ask_access": ["¿y cómo llego?", "¿y cómo llego desde aquí?", "cómo me voy para allá", "¿qué carretera tomo?",
                   "¿y en autobús cómo llego?"],
    "ask_tourist_office": ["¿y la oficina de turismo?", "¿dónde pido informes turísticos?",
                           "y el módulo de turismo", "¿tienen oficina de información turística?"],
}

INFORM_CITY = ["{c}", "en {c}", "¿y en {c}?", "y {c}", "ahora {c}", "¿y de {c}?", "de {c}", "la ciudad de {c}",
               "ahora dime de {c}", "mejor {c}", "y qué tal {c}", "quiero saber de {c}", "háblame de {c}",
               "¿y para {c}?"]

TRAMITE_TEMPLATES = {
    "ask_tramite_requirements": [
        "¿qué necesito para sacar la {t}?", "requisitos para la {t}", "¿qué documentos piden para el {t}?",
        "qué papeles necesito para {t}", "¿cuáles son los requisitos del {t}?", "qué me piden para tramitar {t}",
        "necesito sacar mi {t}, ¿qué llevo?", "¿qué requisitos hay para {t}?",
    ],
    "ask_tramite_cost": [
        "¿cuánto cuesta la {t}?", "costo de {t}", "¿cuánto se paga por el {t}?", "precio del {t}",
        "¿cuánto sale {t}?", "cuánto tengo que pagar por {t}", "¿qué costo tiene la {t}?",
    ],
    "ask_tramite_where": [
        "¿dónde se hace la {t}?", "¿dónde saco mi {t}?", "en qué oficina tramito {t}",
        "¿a dónde voy para {t}?", "dónde tramito el {t}", "¿dónde puedo hacer el trámite de {t}?",
        "¿se puede hacer el {t} por internet?",
    ],
    "ask_tramite_hours": [
        "¿qué horario tienen para {t}?", "horario de atención de {t}", "¿a qué hora abren para el {t}?",
        "¿en qué horario atienden {t}?", "hasta qué hora puedo hacer el {t}", "¿qué días atienden para {t}?",
    ],
    "ask_tramite_info": [
        "información sobre {t}", "quiero información de la {t}", "¿me da informes del {t}?",
        "quiero saber del trámite de {t}", "infórmame sobre {t}", "necesito informes de {t}",
        "¿cómo saco la {t}?", "¿cómo se tramita el {t}?",
    ],
}

TRAMITE_NO_ENTITY = {
    "ask_tramite_requirements": ["¿y qué necesito?", "¿qué requisitos piden?", "¿y qué documentos llevo?",
                                 "qué papeles me piden"],
    "ask_tramite_cost": ["¿y cuánto cuesta?", "¿cuánto cuesta?", "¿y cuánto se paga?", "cuál es el costo",
                         "¿y el precio?", "cuánto hay que pagar"],
    "ask_tramite_where": ["¿y dónde se hace?", "¿dónde lo tramito?", "¿a qué oficina voy?", "y dónde queda la oficina",
                          "¿se puede hacer en línea?"],
    "ask_tramite_hours": ["¿y qué horario tienen?", "¿a qué hora abren?", "¿qué días atienden?", "y el horario",
                          "hasta qué hora atienden"],
    "ask_tramite_info": ["información de trámites", "quiero información de un trámite", "trámites",
                         "quiero hacer una consulta sobre un trámite", "tengo una duda de un trámite",
                         "información de trámites estatales"],
}

INFORM_TRAMITE = ["{t}", "la {t}", "el {t}", "es la {t}", "el de {t}", "la de {t}", "me refiero a la {t}",
                  "para el {t}", "de {t}"]

STATIC = {
    "greet": ["hola", "buenos días", "buenas tardes", "buenas noches", "qué tal", "hola buenas tardes", "bueno",
              "bueno, ¿sí?", "hola, buen día", "buenas", "¿bueno? hola", "hola, qué tal, buenos días",
              "hola, me comunico para pedir información", "¿hola, quién habla?", "sí, bueno"],
    "goodbye": ["adiós", "hasta luego", "es todo, gracias, adiós", "nada más, gracias", "ya es todo", "bye",
                "hasta pronto", "ya no, gracias, hasta luego", "eso es todo", "me despido", "nos vemos",
                "cuelgo, gracias", "no necesito nada más, adiós", "ya terminé", "que tenga buen día, adiós"],
    "thanks": ["gracias", "muchas gracias", "muy amable", "se lo agradezco", "gracias por la información",
               "mil gracias", "ok gracias", "perfecto, gracias", "excelente, muchas gracias", "muy amable, gracias",
               "gracias señorita", "le agradezco mucho"],
    "affirm": ["sí", "si", "claro", "correcto", "así es", "sí, por favor", "está bien", "de acuerdo", "exacto",
               "sí, confirmo", "confirmo", "afirmativo", "órale sí", "ándale", "sale", "va", "sí, ábrala",
               "sí, está bien", "por supuesto", "ok", "okey", "sí, quiero", "ajá"],
    "deny": ["no", "no gracias", "no, muchas gracias", "no, gracias, así está bien", "no, por ahora no, gracias",
             "negativo", "no, está mal", "para nada", "no quiero", "no, cancela", "cancelar",
             "mejor no", "no, así no", "no es correcto", "no, ya no", "todavía no", "no por ahora", "nel"],
    "help": ["ayuda", "¿qué puedo preguntar?", "¿qué opciones hay?", "¿en qué me puede ayudar?", "no sé qué decir",
             "¿cómo funciona esto?", "¿qué hace este servicio?", "dame las opciones", "menú", "menú principal",
             "¿qué puedo hacer aquí?", "necesito ayuda", "¿qué información tienen?", "regresar al menú",
             "¿cuáles son las opciones?", "volver al inicio"],
    "repeat": ["repite", "¿me lo repite?", "repítelo por favor", "no escuché", "otra vez", "¿perdón?",
               "¿cómo dijo?", "no le entendí, repita", "vuelva a decirlo", "¿puede repetir el folio?",
               "repita el número por favor", "más despacio por favor", "¿qué dijo?", "dígamelo otra vez",
               "repítame el folio y el nip", "no alcancé a anotar, repita", "de nuevo por favor"],
    "request_agent": ["agente", "operador", "asesor", "quiero hablar con un agente", "comuníqueme con un operador",
                      "pásame con un asesor", "quiero hablar con una persona", "con un humano por favor",
                      "hablar con alguien", "quiero un asesor", "me comunica con una operadora", "operadora",
                      "necesito hablar con una persona real", "transfiérame con un agente",
                      "prefiero hablar con un asesor", "¿me pasa con alguien de atención?",
                      "ya no quiero hablar con la máquina", "quiero que me atienda una persona"],
    "out_of_scope": ["¿qué hora es?", "cuéntame un chiste", "¿quién ganó el partido?", "quiero pedir una pizza",
                     "¿cuál es el tipo de cambio del dólar?", "¿va a llover mañana?", "recarga de saldo",
                     "quiero comprar un celular", "¿cuánto es dos más dos?", "háblame de política",
                     "¿me prestas dinero?", "quiero reservar un vuelo a Cancún", "¿cuál es tu color favorito?",
                     "cántame una canción", "quiero cambiar mi plan de internet", "¿dónde venden tacos al pastor?",
                     "¿quién es el presidente?", "quiero reportar un bache", "¿cuándo pagan la pensión?",
                     "tengo una queja de la luz", "¿cuánto cuesta la gasolina hoy?", "¿cuánto vale un celular nuevo?",
                     "¿cómo está el tráfico en la autopista?", "¿qué temperatura hace?", "quiero pagar el agua",
                     "¿qué serie me recomiendas ver?", "quiero comprar boletos para un concierto",
                     "¿a qué hora juega el América?", "mándame un taxi", "¿cuánto está el dólar?",
                     "quiero pagar mi tarjeta de crédito", "¿qué canción está de moda?",
                     "¿cuánto cobra un plomero?", "pon música", "¿dónde queda el banco más cercano?",
                     "quiero contratar cable", "¿cómo hago una receta de pastel?", "¿quién eres?"],
    "tourism": ["información turística", "turismo", "quiero información de turismo", "quiero viajar por Veracruz",
                "lugares para visitar en el estado", "¿qué ciudades me recomienda?", "quiero ir de paseo",
                "información para turistas", "estoy planeando unas vacaciones", "¿qué destinos turísticos hay?",
                "recomiéndeme lugares para visitar", "¿a dónde puedo ir de vacaciones en Veracruz?",
                "lugares turísticos", "¿qué sitios turísticos me sugiere?", "quiero conocer Veracruz",
                "¿qué lugares turísticos hay?", "opción de turismo", "voy a viajar, ¿qué me recomienda?",
                "quiero información para pasear"],
    "check_status": ["¿cómo va mi trámite?", "estado de mi trámite", "quiero saber el estado de mi trámite",
                     "consultar un folio", "quiero consultar mi folio", "¿ya está listo mi trámite?",
                     "seguimiento de mi solicitud", "¿en qué va mi solicitud?", "estatus de mi trámite",
                     "quiero revisar mi trámite", "tengo un folio y quiero saber cómo va",
                     "¿ya salió mi licencia?", "consulta de estatus", "quiero dar seguimiento a un trámite",
                     "¿ya puedo recoger mi documento?", "revisar el avance de mi solicitud"],
    "start_tramite": ["quiero iniciar un trámite", "quiero hacer un trámite por teléfono",
                      "iniciar una solicitud", "quiero abrir una solicitud", "empezar un trámite",
                      "¿puedo iniciar el trámite por teléfono?", "quiero solicitar un trámite",
                      "quiero comenzar mi trámite", "abrir un folio nuevo", "quiero hacer una solicitud nueva",
                      "iniciar trámite", "registrar una solicitud"],
    "dtmf": ["uno", "dos", "tres", "cero", "el uno", "el dos", "el tres", "opción uno", "opción dos",
             "opción tres", "la opción cero", "marco el uno", "el cero", "1", "2", "3", "0", "la primera",
             "la segunda", "la tercera", "número dos", "oprimo el tres"],
    "inform_number": ["ocho cuatro siete uno dos tres", "mi folio es ocho cuatro siete dos cero cero uno",
                      "cuatro cinco uno dos", "el nip es uno dos tres cuatro", "84 71 23", "8 4 7 1 2 3 0",
                      "cero cero siete ocho nueve", "es el 847 120 03", "veintitrés cuarenta y cinco",
                      "nueve nueve ocho siete seis cinco", "mi número es uno uno dos tres cinco ocho",
                      "ochenta y cuatro setenta y uno veintidós", "folio 2025 0001", "seis siete ocho nueve",
                      "los últimos cuatro son cinco dos h ocho", "termina en cero siete", "tres tres dos uno cero",
                      "el folio es dos cero dos cinco cero cero cero cuatro dos", "1234", "847120039",
                      "cuatro tres", "mil doscientos treinta y cuatro", "siete siete siete uno"],
}


DIGIT_WORDS = ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve")
NUMBER_LEADS = ("", "", "", "mi folio es ", "el folio es ", "es el ", "mi nip es ", "el número es ", "folio ",
                "son ", "este, ")


def number_examples(rng: random.Random, count: int) -> list[str]:
    """Folios and PINs the way callers say them: word by word, as figures, in groups."""
    rows = []
    for i in range(count):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.choice((4, 8, 8))))
        lead = rng.choice(NUMBER_LEADS)
        style = i % 3
        if style == 0:
            body = " ".join(DIGIT_WORDS[int(d)] for d in digits)
        elif style == 1:
            body = " ".join(digits[j:j + 4] for j in range(0, len(digits), 4))
        else:
            body = " ".join(digits)
        rows.append(lead + body)
    return rows


def main() -> None:
    rng = random.Random(5)
    cities = itertools.cycle(rng.sample(CITY_FORMS, len(CITY_FORMS)))
    trams = itertools.cycle(rng.sample(TRAMITES, len(TRAMITES)))
    blocks: dict[str, list[str]] = {}
    for intent, templates in TOURISM.items():
        rows = []
        for _ in range(3):
            for tpl in templates:
                c, c2 = next(cities), next(cities)
                rows.append(tpl.format(c=city(c), c2=city(c2)))
        rows += FOLLOWUPS[intent]
        blocks[intent] = rows
    blocks["inform_city"] = [tpl.format(c=city(next(cities))) for _ in range(3) for tpl in INFORM_CITY]
    for intent, templates in TRAMITE_TEMPLATES.items():
        rows = [tpl.format(t=tram(next(trams))) for _ in range(4) for tpl in templates]
        blocks[intent] = rows + TRAMITE_NO_ENTITY[intent]
    blocks["inform_tramite"] = [tpl.format(t=tram(next(trams))) for _ in range(4) for tpl in INFORM_TRAMITE]
    blocks["start_tramite"] = STATIC["start_tramite"] + [
        f"quiero iniciar el trámite de {tram(next(trams))} por teléfono" for _ in range(4)] + [
        f"quiero solicitar {tram(next(trams))}" for _ in range(4)]
    blocks["inform_number"] = STATIC["inform_number"] + number_examples(rng, 30)
    for intent, rows in STATIC.items():
        blocks.setdefault(intent, rows)
    lines = ["# GENERATED by dialogs/tools/gen_nlu.py from its templates: edit the templates, then re-run.",
             'version: "3.1"', "nlu:"]
    for intent, rows in blocks.items():
        lines.append(f"  - intent: {intent}")
        lines.append("    examples: |")
        seen = set()
        for row in rows:
            if row not in seen:
                seen.add(row)
                lines.append(f"      - {row}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({sum(len(r) for r in blocks.values())} examples, {len(blocks)} intents)")


if __name__ == "__main__":
    main()
