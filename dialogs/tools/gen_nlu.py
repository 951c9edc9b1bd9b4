"""Expand the NLU templates below into nlu_data/train/nlu.yml (the training split).

Why a generator: tourism and trámite questions are the same few sentence shapes crossed with 12 cities (and
their ASR spellings) and ~40 procedure names; writing the product by hand drifts. The generated YAML is
committed and stays editable; the held-out test split (nlu_data/test/) is written by hand with other wordings
and is never produced here. Run: `.venv/bin/python dialogs/tools/gen_nlu.py`.
"""
from __future__ import annotations

import functools
import itertools
import random
import re
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "nlu_data" / "train" / "nlu.yml"
if str(ROOT) not in sys.path:     # run as a script: the catalogs are read through the project package
    sys.path.insert(0, str(ROOT))

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
    "ask_tramite_where": ["¿y dónde se hace?", "¿dónde lo tramito?", "¿a qué oficina voy?", "y dónde queda la oficina"],
    "ask_tramite_hours": ["¿y qué horario tienen?", "¿a qué hora abren?", "¿qué días atienden?", "y el horario",
                          "hasta qué hora atienden"],
    "ask_tramite_info": ["información de trámites", "quiero información de un trámite", "trámites",
                         "quiero hacer una consulta sobre un trámite", "tengo una duda de un trámite",
                         "información de trámites estatales"],
}

INFORM_TRAMITE = ["{t}", "la {t}", "el {t}", "es la {t}", "el de {t}", "la de {t}", "me refiero a la {t}",
                  "para el {t}", "de {t}"]
# The answer to "¿cuál de ellos?": one word of the name, after "la de" / "el de" (a full name is in the templates).
INFORM_TRAMITE_SHORT = ["la de [taxi](tramite)", "el de [placas](tramite)", "la de [motociclista](tramite)",
                        "la de [conducir](tramite)", "la de [manejo](tramite)", "el de [nacimiento](tramite)",
                        "la de [funcionamiento](tramite)", "el de [predial](tramite)", "la de [transporte](tramite)",
                        "esa, la de [carga](tramite)", "la de [servicio público](tramite)", "el del [agua](tramite)",
                        "la del [registro](tramite)", "la de [construcción](tramite)", "la de [pesca](tramite)"]

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


# ---------------------------------------------------------------------------------------- how callers speak
# The templates above are the clean core. Phone turns rarely come that clean: the recognizer writes lowercase
# without accents or punctuation, callers open with a filler or a greeting and ask in the same breath, ask
# indirectly, and add words around a city name. The shapes below are crossed with the core templates.

OPENERS = [
    "oiga, una pregunta, ", "pues mire, ", "este, ", "eh, ", "mire, ", "oiga, ", "disculpe, ", "buenas tardes, ",
    "hola, buenos días, ", "hola, una pregunta, ", "sí, bueno, mire, ", "a ver, ", "fíjese que ", "una duda, ",
    "señorita, ", "joven, ", "perdón, ", "buenas, oiga, ", "oye, ", "mmm, ", "pues, ", "bueno, ", "ajá, mire, ",
    "hola, buenas, ", "buen día, una consulta, ", "qué tal, oiga, ", "buenas noches, disculpe, ", "ey, ",
    "hola, mire, le hablo porque ", "buenas tardes, le llamo para preguntar ", "este, eh, ",
]
INDIRECT = [
    "me podría decir ", "quisiera saber ", "me puede informar ", "de casualidad sabe ", "usted sabe ",
    "quería saber ", "quería preguntar ", "me gustaría saber ", "le quería preguntar ", "necesito saber ",
    "me interesa saber ", "me dice ", "me podría ayudar, ", "sabe ", "no sabe ",
]
CLOSERS = [" por favor", ", gracias", " fíjese", " o algo así", ", es que no sé", " porfa", ", se lo agradezco",
           " mientras", " nomás"]

# A city with words around it; the entity covers only the name.
CITY_WRAPS = ["{c}", "{c}", "{c}", "{c} veracruz", "el centro de {c}", "allá por {c}", "por el rumbo de {c}",
              "la zona de {c}", "{c} ver", "el municipio de {c}", "la ciudad de {c}", "{c} mero", "allá en {c}",
              "el pueblo de {c}", "por allá por {c}", "{c}, en el estado de veracruz"]

TOURISM_MORE = {
    "ask_attractions": [
        "qué me sugiere para visitar en {c}", "¿vale la pena ir a {c}?", "qué hay de bonito en {c}",
        "a dónde llevo a mi familia en {c}", "qué actividades hay en {c}", "qué se puede hacer en {c} el fin de semana",
        "¿tiene cascadas {c}?", "¿hay playas en {c}?", "¿qué museos hay en {c}?", "qué hay para hacer en {c}",
        "¿qué lugares bonitos tiene {c}?", "qué me recomienda en {c}", "¿a dónde puedo ir en {c}?",
        "pienso ir a {c}, ¿qué me recomienda?", "vamos a ir a {c}, ¿qué hay para ver?", "qué tal está {c} para ir",
        "¿hay algo que ver en {c}?", "¿qué se puede visitar por {c}?", "¿hay ríos o cascadas por {c}?",
        "¿dónde me puedo bañar en {c}?", "qué iglesias hay en {c}", "¿hay zona arqueológica en {c}?",
        "lo más bonito de {c}", "qué conocer en {c} en un día", "¿qué paseos recomienda en {c}?",
        "qué hay que hacer en {c}", "¿qué atracciones hay en {c}?", "¿a dónde voy a pasear en {c}?",
        "¿hay algún museo en {c}?", "¿qué playas tiene {c}?", "dónde hay cascadas en {c}",
        "¿qué actividades puedo hacer en {c}?", "¿qué es lo más famoso de {c}?", "¿conviene visitar {c}?",
    ],
    "ask_food": [
        "¿y allá qué se come?", "qué es lo que más se come en {c}", "¿qué me recomienda comer en {c}?",
        "¿qué platillo no me puedo perder en {c}?", "qué hay de comer en {c}", "¿qué comida es famosa en {c}?",
        "¿qué se acostumbra comer en {c}?", "qué es lo típico de {c} para comer", "¿dónde se come rico en {c}?",
        "antojitos de {c}", "¿qué bebida típica hay en {c}?", "qué puedo probar en {c}",
        "¿qué venden de comer en {c}?", "lo típico de la comida en {c}", "¿qué comen en {c}?",
    ],
    "ask_festivals": [
        "¿cuándo son las fiestas en {c}?", "¿qué fiestas hacen en {c}?", "cuándo es la fiesta del pueblo de {c}",
        "¿en qué fecha es la feria de {c}?", "¿cuándo hay fiesta en {c}?", "la fiesta grande de {c} cuándo es",
        "¿qué celebran en {c}?", "¿hay alguna feria en {c} este mes?", "fiestas tradicionales de {c}",
        "¿cuándo es el santo patrono de {c}?", "¿cuándo es bueno ir a {c} por las fiestas?",
    ],
    "ask_access": [
        "¿por dónde me voy a {c}?", "cómo le hago para llegar a {c}", "¿qué camión me lleva a {c}?",
        "¿cuánto se hace en carro a {c}?", "¿qué tan retirado está {c}?", "¿está muy lejos {c}?",
        "¿cómo llego en carro a {c}?", "¿por qué carretera se llega a {c}?", "¿cuánto tiempo se hace a {c}?",
        "¿hay autobuses para {c}?", "cómo se llega a {c} desde {c2}", "¿de {c2} a {c} cuánto se hace?",
        "¿qué ruta tomo para llegar a {c}?", "quiero ir a {c} en autobús", "indicaciones para llegar a {c}",
    ],
    "ask_tourist_office": [
        "¿a dónde llamo para informes de turismo en {c}?", "¿dónde me informo de turismo en {c}?",
        "¿hay un módulo de turismo en {c}?", "oficina de información al turista en {c}",
        "¿dónde dan informes para turistas en {c}?", "¿quién me da información turística de {c}?",
    ],
}
FOLLOWUPS_MORE = {
    "ask_attractions": ["¿y allá qué hay que ver?", "¿y qué me sugiere visitar?", "¿y qué actividades hay?",
                        "¿y vale la pena?", "¿tiene cascadas?", "¿y hay playa?", "¿y museos?", "¿y qué hago allá?",
                        "y que hay para ver alla", "y que se puede hacer"],
    "ask_food": ["¿y allá qué se come?", "¿y qué es lo típico?", "¿y de comer?", "¿y qué platillos tienen?",
                 "y que se come alla", "y la comida"],
    "ask_festivals": ["¿y las fiestas cuándo son?", "¿y cuándo es la feria?", "y que fiestas hay alla"],
    "ask_access": ["¿y cómo le hago para llegar?", "¿y qué tan lejos está?", "¿y por dónde me voy?",
                   "y como llego alla", "¿cuánto se hace de camino?"],
    "ask_tourist_office": ["¿y a dónde pido informes?", "¿y hay oficina de turismo?"],
}
INFORM_CITY_MORE = ["{c} veracruz", "allá por {c}", "el centro de {c}", "este, {c}", "en {c} por favor",
                    "es {c}", "de {c} por favor", "pues {c}", "sería {c}", "{c} mero", "por {c}",
                    "me interesa {c}", "quiero ir a {c}", "voy a ir a {c}", "vamos a {c}"]

TRAMITE_MORE = {
    "ask_tramite_requirements": [
        "¿qué ocupo para sacar la {t}?", "qué papeles piden para el {t}", "¿qué tengo que llevar para la {t}?",
        "¿qué documentos ocupo para {t}?", "¿qué me piden para el {t}?", "qué necesito llevar para {t}",
        "quería ver lo de la {t}, ¿qué piden?", "para tramitar la {t} qué necesito", "¿qué lleva la {t}?",
        "¿qué papelería piden para {t}?", "¿qué hay que presentar para la {t}?", "requisitos de {t}",
        "¿con qué documentos saco la {t}?", "ocupo sacar la {t}, ¿qué llevo?",
    ],
    "ask_tramite_cost": [
        "¿cuánto me cobran por la {t}?", "¿en cuánto sale la {t}?", "¿cuánto hay que pagar por el {t}?",
        "¿qué precio tiene la {t}?", "cuánto cuesta sacar la {t}", "¿es gratis la {t}?",
        "¿cuánto sale el trámite de {t}?", "quería ver lo de la {t}, cuánto cuesta",
        "¿cuánto se paga de {t}?", "¿cuánto vale la {t}?",
    ],
    "ask_tramite_where": [
        "¿a dónde tengo que ir para la {t}?", "¿en dónde saco la {t}?", "¿dónde queda la oficina para {t}?",
        "dónde se tramita la {t}", "¿en qué lugar hacen la {t}?", "¿a qué oficina voy para el {t}?",
        "quería ver lo de la {t}, ¿a dónde voy?", "¿dónde me atienden para {t}?",
    ],
    "ask_tramite_hours": [
        "¿a qué hora atienden para la {t}?", "¿qué horario hay para {t}?", "¿abren en sábado para {t}?",
        "¿hasta qué hora atienden para el {t}?", "¿a qué hora cierran para {t}?",
    ],
    "ask_tramite_info": [
        "quería ver lo de la {t}", "pues mire, quería ver lo de {t}", "ocupo la {t}", "quiero sacar la {t}",
        "necesito tramitar la {t}", "quiero tramitar el {t}", "ocupo sacar mi {t}", "me urge la {t}",
        "tengo que hacer lo de la {t}", "vengo por lo de la {t}", "le hablo por lo de {t}",
        "¿cómo le hago para la {t}?", "qué tengo que hacer para la {t}", "¿cómo se saca la {t}?",
        "quiero hacer el trámite de {t}", "¿me ayuda con lo de {t}?", "información del {t}",
    ],
    "ask_tramite_duration": [
        "¿cuánto tarda la {t}?", "¿en cuántos días me dan la {t}?", "¿cuánto tiempo tarda el {t}?",
        "¿en cuánto tiempo sale la {t}?", "¿cuántos días tarda el trámite de {t}?", "¿me la dan el mismo día la {t}?",
        "¿cuándo me entregan la {t}?", "¿cuánto se tardan en darme la {t}?", "¿qué tan rápido sale la {t}?",
        "¿en cuántos días está lista la {t}?", "tiempo de entrega de la {t}", "¿cuánto demora el {t}?",
        "¿en qué tiempo me entregan el {t}?", "¿la {t} sale luego luego?",
    ],
    "ask_tramite_online": [
        "¿se puede sacar la {t} por internet?", "¿la {t} se hace en línea?", "¿puedo tramitar la {t} por teléfono?",
        "¿la {t} se puede hacer desde mi casa?", "¿hay que ir en persona para la {t}?",
        "¿se puede hacer el {t} en línea?", "¿el {t} se tramita por internet?", "¿puedo hacer la {t} sin ir a la oficina?",
        "¿la {t} se puede pedir por la página?", "¿se puede iniciar la {t} por teléfono?",
        "¿tengo que ir a la oficina para la {t}?", "¿puedo sacar la {t} en línea?",
    ],
}
TRAMITE_NO_ENTITY_MORE = {
    "ask_tramite_requirements": ["¿y qué ocupo?", "¿y qué tengo que llevar?", "¿qué papeles llevo?", "y que piden",
                                 "¿qué documentos ocupo?", "¿y los requisitos?", "y que necesito llevar"],
    "ask_tramite_cost": ["¿y cuánto sale?", "¿y cuánto me cobran?", "¿es gratis?", "y cuanto cuesta",
                         "¿y en cuánto sale?", "¿cuánto cobran?", "¿tiene costo?"],
    "ask_tramite_where": ["¿y a dónde voy?", "¿y en dónde lo saco?", "¿dónde está la oficina?", "y donde se hace",
                          "¿en qué oficina?"],
    "ask_tramite_hours": ["¿y a qué hora atienden?", "¿abren en sábado?", "y a que hora cierran",
                          "¿qué días abren?"],
    "ask_tramite_duration": ["¿y cuánto tarda?", "¿en cuántos días sale?", "¿cuánto tiempo tarda?",
                             "¿y en cuánto tiempo me lo dan?", "y cuanto se tarda", "¿me lo dan el mismo día?",
                             "¿cuándo me lo entregan?", "¿y en cuántos días?", "¿cuánto demora?",
                             "¿qué tan rápido sale?", "¿en cuánto tiempo está listo?"],
    "ask_tramite_online": ["¿y se puede por internet?", "¿se puede hacer en línea?", "¿y por teléfono se puede?",
                           "y se puede por internet", "¿tengo que ir en persona?", "¿lo puedo hacer desde mi casa?",
                           "¿hay que ir a la oficina?", "¿se puede en línea?", "¿lo puedo iniciar por teléfono?"],
    "ask_tramite_info": ["quería ver lo de un trámite", "tengo una pregunta de un trámite", "ocupo hacer un trámite",
                         "es para un trámite", "pues mire, es sobre un trámite", "quería hacer una consulta de trámites"],
}

# What people say on the phone about their car, papers, a loss or a theft. (words, the catalog entry meant)
EVERYDAY_TRAMITE = [
    "las placas del carro", "las placas de mi carro", "las placas de la moto", "placas de mi camioneta",
    "la tarjeta de circulación del carro", "la tarjeta de circulación de mi vehículo", "el refrendo del carro",
    "la tenencia del carro", "dar de baja mi carro", "dar de baja las placas de mi carro", "el cambio de propietario del carro",
    "el cambio de dueño de la camioneta", "el carro que compré", "me robaron las placas", "se me perdieron las placas",
    "perdí la tarjeta de circulación", "se me perdió la licencia", "me robaron mi licencia", "mis papeles del carro",
    "la licencia de manejar", "el permiso de manejo", "la licencia para la moto", "mi acta", "el acta de mi hijo",
    "el acta de nacimiento de mi mamá", "un acta de nacimiento", "la carta de antecedentes", "la carta de no antecedentes",
    "los antecedentes no penales", "registrar a mi bebé", "el registro de mi hijo", "casarme por el civil",
    "corregir mi acta", "un error en mi acta", "mi curp", "apostillar mi acta", "una denuncia por robo",
    "la constancia de no inhabilitación", "el certificado de la secundaria", "el certificado de primaria",
    "la pensión del ipe", "la jubilación", "el divorcio", "el acta de defunción de mi papá", "la licencia vencida",
    "renovar la licencia", "reponer las placas", "placas nuevas para el carro", "emplacar mi carro",
]


def strip_accents(text: str) -> str:
    keep = {"ñ": "\0", "Ñ": "\1"}
    for k, v in keep.items():
        text = text.replace(k, v)
    text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    return text.replace("\0", "ñ").replace("\1", "Ñ")


def asr_form(text: str) -> str:
    """What the recognizer writes: lowercase, no accents, no punctuation."""
    text = strip_accents(text.lower())
    return " ".join(re.sub(r"[¿?¡!,.;:]", " ", text).split())


def disfluent(text: str, rng: random.Random) -> str:
    """A hesitation inside the turn: a repeated first word or an 'eh' after it."""
    words = text.split(" ")
    if len(words) < 3 or words[0].startswith("["):
        return text
    if rng.random() < 0.5:
        return " ".join([words[0], words[0].lstrip("¿"), *words[1:]]) if words[0].isalpha() else text
    return " ".join([words[0], "eh,", *words[1:]])


class Speaker:
    """Turns one clean template into the way a caller says it (seeded, reproducible)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def city(self, form: tuple[str, str], wrap: bool, asr: bool) -> str:
        text, value = form
        text = asr_form(text) if asr else text
        ann = f"[{text}](city)" if text == value else f'[{text}]{{"entity": "city", "value": "{value}"}}'
        if wrap:
            shape = self.rng.choice(CITY_WRAPS)
            ann = shape.format(c=ann)
        return ann

    def tram(self, name: str, asr: bool) -> str:
        return annotate_tramite(name, asr)

    def dress(self, text: str, asr: bool, indirect: bool = True) -> str:
        """Opener / indirect lead / closer / hesitation, then the recognizer's spelling."""
        r = self.rng.random() if indirect else self.rng.random() * 0.35
        if r < 0.35:
            text = self.rng.choice(OPENERS) + lower_first(text)
        elif r < 0.55:
            text = self.rng.choice(INDIRECT) + lower_first(text.lstrip("¿").rstrip("?"))
        elif r < 0.65:
            text = self.rng.choice(OPENERS) + self.rng.choice(INDIRECT) + lower_first(text.lstrip("¿").rstrip("?"))
        if self.rng.random() < 0.15:
            text = text.rstrip("?") + self.rng.choice(CLOSERS)
        if self.rng.random() < 0.12:
            text = disfluent(text, self.rng)
        return asr_outside_entities(text) if asr else text


def lower_first(text: str) -> str:
    if text.startswith("["):
        return text
    if text.startswith("¿") and len(text) > 1 and not text[1] == "[":
        return "¿" + text[1:2].lower() + text[2:]
    return text[:1].lower() + text[1:] if text[1:2].islower() or text[1:2] == " " else text


_ANNOTATION = re.compile(r"(\[[^\]]+\](?:\([^)]*\)|\{[^}]*\}))")


def asr_outside_entities(text: str) -> str:
    """ASR spelling for the words around the entity annotations (their text was already transformed)."""
    parts = _ANNOTATION.split(text)
    out = [p if i % 2 else asr_form(p) for i, p in enumerate(parts)]
    return " ".join(" ".join(out).split())


STATIC_MORE = {
    "greet": ["oiga", "¿bueno?", "sí, diga", "aló", "buenas tardes señorita", "hola, buenas tardes, ¿me escucha?",
              "buenos días joven", "qué tal, buenas tardes", "hola hola", "bueno bueno", "sí, buenas"],
    "goodbye": ["eso es todo, muchas gracias, hasta luego", "no, eso sería todo, gracias, bye",
                "muchas gracias, hasta luego", "gracias, adiós", "ya con eso, gracias, hasta luego",
                "es todo por ahora, gracias, bye", "muy amable, hasta luego", "ya quedó, gracias, adiós",
                "no, nada más, gracias, que esté bien", "sería todo, bye", "ya está, hasta luego",
                "bueno, gracias, ahí nos vemos", "gracias, buenas tardes, adiós", "ya no ocupo nada, gracias, bye",
                "listo, es todo, hasta luego", "ya terminamos, gracias", "ok, muchas gracias, bye",
                "nada más eso, muchas gracias, adiós", "ahí le dejo, gracias", "voy a colgar, gracias"],
    "thanks": ["gracias", "ok, gracias", "muchas gracias", "ah, muchas gracias", "sale, gracias", "gracias joven",
               "órale, gracias", "perfecto, muy amable", "gracias por la información, muy amable"],
    "deny": ["no, así está bien", "no, nada más", "no, ya no", "no gracias, así está bien", "no, con eso",
             "no, eso es todo", "no, está bien así"],
    "affirm": ["sí, dígame", "sí, los demás", "sí, por favor, dígame los demás", "sí, quiero saber más",
               "ándele, sí", "sí, sígale", "sí, continúe", "sí, adelante"],
    "request_agent": ["quiero hablar con alguien de la oficina", "páseme con un licenciado",
                      "comuníqueme con una señorita", "¿me puede pasar con una persona?", "hablar con un asesor"],
    "help": ["¿qué me puede decir?", "¿y qué más sabe?", "¿de qué me puede informar?", "¿qué otras cosas sabe?"],
    "check_status": ["quería ver cómo va mi trámite", "pues mire, quería saber si ya está mi trámite",
                     "tengo un folio, ¿me dice cómo va?", "oiga, ¿ya quedó mi trámite?", "quiero checar mi folio",
                     "¿me checa mi trámite?", "quiero saber si ya salió mi trámite", "el estatus de mi folio",
                     "¿en qué va lo mío?", "ya metí mis papeles y quiero saber cómo va",
                     "quiero saber el avance de mi trámite", "le llamo para ver cómo va mi solicitud"],
    "tourism": ["quiero ir de vacaciones", "voy a ir de paseo a Veracruz", "¿qué me recomienda visitar en el estado?",
                "información de lugares turísticos", "quiero pasear por el estado", "¿a dónde puedo ir este fin de semana?",
                "quería información de turismo", "pues mire, quiero ir de viaje"],
    "out_of_scope": ["¿cuánto cuesta un cuarto de hotel?", "quiero un número de taxi", "¿a qué hora cierra el banco?",
                     "quiero pagar la luz", "mi celular no tiene señal", "¿venden boletos de autobús?",
                     "quiero saber el resultado del partido", "¿me recomienda un doctor?"],
}

START_TEMPLATES = [
    "quiero iniciar el trámite de {t} por teléfono", "quiero solicitar {t}", "¿puedo pedir la {t} por teléfono?",
    "ábrame una solicitud de {t}", "quiero empezar el trámite de la {t} ahorita por teléfono",
    "iniciar la solicitud de {t}", "quiero que me levanten la solicitud de {t}", "¿me ayuda a iniciar la {t}?",
    "quiero dar de alta una solicitud de {t}", "inicie mi trámite de {t} por favor",
]
START_PLAIN = ["quiero iniciar un trámite ahorita", "¿se puede empezar un trámite por teléfono?",
               "quiero abrir un trámite", "ábrame un folio", "quiero meter una solicitud", "iniciar un trámite nuevo",
               "quiero hacer mi solicitud por teléfono", "¿me puede levantar una solicitud?"]
OUT_OF_SCOPE_MORE = [
    "¿cuánto cuesta una noche de hotel en el puerto?", "¿dónde queda el seguro social?", "quiero pagar el predial",
    "¿cuánto cobran de luz este mes?", "¿me da el teléfono de la comisión federal?", "¿cómo saco la visa americana?",
    "quiero sacar cita en el imss", "¿dónde pago mi recibo del agua?", "¿qué restaurante me recomienda?",
    "quiero saber mi saldo del banco", "¿a cómo está el kilo de tortilla?", "¿a qué hora pasa el camión de la basura?",
    "¿cuándo depositan la beca?", "quiero poner una queja contra mi vecino", "me duele la cabeza, ¿qué tomo?",
    "quiero rentar una casa", "¿cuánto cuesta el pasaje de autobús?", "¿venden terrenos?",
]

VERB_TRAMITE = [
    "dar de baja mi carro", "dar de baja las placas", "me robaron las placas", "se me perdieron las placas",
    "perdí la tarjeta de circulación", "se me perdió la licencia", "me robaron la licencia", "registrar a mi bebé",
    "casarme por el civil", "corregir mi acta", "renovar la licencia", "reponer las placas", "emplacar mi carro",
    "apostillar mi acta", "sacar mi acta de nacimiento", "sacar la licencia", "sacar placas", "cambiar de dueño el carro",
    "poner el carro a mi nombre", "pagar el refrendo", "pagar la tenencia", "sacar la carta de antecedentes",
    "divorciarme", "reconocer a mi hijo", "sacar mi curp", "registrar una defunción", "pedir información pública",
]
VERB_TEMPLATES = {
    "ask_tramite_requirements": ["¿qué necesito para {v}?", "¿qué papeles ocupo para {v}?", "qué piden para {v}"],
    "ask_tramite_cost": ["¿cuánto cuesta {v}?", "¿cuánto me cobran por {v}?"],
    "ask_tramite_where": ["¿dónde puedo {v}?", "¿a dónde voy para {v}?"],
    "ask_tramite_duration": ["¿cuánto tarda {v}?", "¿en cuántos días puedo {v}?"],
    "ask_tramite_online": ["¿se puede {v} por internet?", "¿puedo {v} en línea?"],
    "ask_tramite_info": ["quiero {v}", "ocupo {v}", "necesito {v}, ¿qué hago?", "¿cómo le hago para {v}?",
                         "quería ver lo de {v}"],
}

STATEMENT_TEMPLATES = {
    "ask_tramite_info": ["fíjese que {s}", "{s}, ¿qué hago?", "oiga, {s}, ¿qué tengo que hacer?",
                         "es que {s}", "le hablo porque {s}"],
    "ask_tramite_requirements": ["{s}, ¿qué papeles ocupo?", "es que {s}, ¿qué me piden?"],
}
"""A caller's own account of the case ("me robaron las placas"), which names no procedure: the intent is
learned here, the trámite comes from the words (dialogs.catalog_search)."""

_ARTICLE_SLOT = re.compile(r"\b(?:la|el|los|las|mi|mis) \{t\}")


def fill_tramite(tpl: str, name: str, speaker: Speaker, asr: bool) -> str:
    """A template with a trámite name; a name that brings its own article replaces the template's."""
    if name.split(" ", 1)[0] in ("el", "la", "los", "las", "mi", "mis", "un", "una"):
        tpl = _ARTICLE_SLOT.sub("{t}", tpl).replace("del {t}", "de {t}")
    return tpl.format(t=speaker.tram(name, asr))


def catalog_city_forms() -> list[tuple[str, str]]:
    """Every catalog name, synonym and mis-hearing of each city, with the canonical name the actions know."""
    from dialogs.catalog import load_cities
    forms = [(p, c.name) for c in load_cities().cities for p in c.phrases]
    return list(dict.fromkeys(CITY_FORMS + forms))


_LEAD_WORDS = frozenset({"el", "la", "los", "las", "un", "una", "mi", "mis", "su", "sus"})
_VERB = re.compile(r"^\w+(ar|er|ir)(me|se|nos|lo|la)?\b")
_STATEMENT = re.compile(r"^(me|se|te|nos|nunca|ya|perdi|compre|naci|fallecio|violaron|dejo|no (estoy|tengo|me))\b|"
                        r"^\w+ \w+ tiene\b")
_NOT_USED = re.compile(r"^requisitos\b")
"""Catalog phrases that are not a trámite's name but something said about it: a verb ("renovar la licencia", "dar
de baja el carro") or a statement ("me robaron las placas", "perdí mi licencia", "mi acta tiene un error")."""


def _plain(text: str) -> str:
    return " ".join(strip_accents(text.lower()).replace(",", " ").split())


def phrase_kind(phrase: str) -> str | None:
    """name ("licencia de manejo"), wrapped (a name with words around: "las placas del carro"), verb ("dar de baja
    las placas"), statement ("me robaron la licencia"), or None (not usable as a turn's words)."""
    plain = _plain(phrase)
    if not plain or _NOT_USED.search(plain):
        return None
    if _STATEMENT.search(plain):
        return "statement"
    if plain.split()[0] in _LEAD_WORDS:
        return "wrapped"
    return "verb" if _VERB.search(plain) else "name"


def tramite_phrases() -> list[str]:
    """Every way to name a trámite: the generator's list, the catalogs' names and synonyms, everyday phrases."""
    from dialogs.catalog import load_tramites
    names = [p.lower() if p[:1].isupper() and not p.isupper() else p
             for t in load_tramites().tramites for p in t.phrases]
    return list(dict.fromkeys(TRAMITES + names + EVERYDAY_TRAMITE + VERB_TRAMITE))


@functools.lru_cache(maxsize=1)
def name_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """The names, longest first, as whole-word patterns that ignore case."""
    # everyday phrases ("placas de mi camioneta") are words around a name, never a name themselves
    names = sorted({n for n in tramite_phrases() if phrase_kind(n) == "name" and n not in EVERYDAY_TRAMITE},
                   key=len, reverse=True)
    return [(n, re.compile(r"(?<!\w)" + re.escape(n) + r"(?!\w)", re.IGNORECASE)) for n in names]


def annotate_tramite(phrase: str, asr: bool) -> str:
    """The entity covers the trámite's name and nothing around it, the convention of the held-out split:
    "las [placas](tramite) del carro", "se me venció la [licencia](tramite)", "el [acta de nacimiento](tramite)
    de mi mamá". A catalog synonym without a name in it ("emplacar un carro nuevo", "compré un carro usado") is the
    entity as a whole (the catalog resolves it); other words without a name are plain text, and the actions find
    the trámite from the whole turn (dialogs.catalog_search)."""
    form = asr_form if asr else (lambda t: t)
    for _, pattern in name_patterns():
        found = pattern.search(phrase)
        if found:
            before, said, after = phrase[:found.start()], found.group(0), phrase[found.end():]
            return " ".join(f"{form(before)} [{form(said)}](tramite) {form(after)}".split())
    if phrase in catalog_synonyms():
        return f"[{form(phrase)}](tramite)"
    return form(phrase)


@functools.lru_cache(maxsize=1)
def catalog_synonyms() -> frozenset[str]:
    from dialogs.catalog import load_tramites
    return frozenset(p.lower() if p[:1].isupper() and not p.isupper() else p
                     for t in load_tramites().tramites for p in t.phrases)


def _of_kind(*kinds: str) -> list[str]:
    return [n for n in tramite_phrases() if phrase_kind(n) in kinds]


def catalog_tramite_names() -> list[str]:
    """Phrases that fit where a template says {t}: a name, maybe with its article or words around it."""
    return _of_kind("name", "wrapped")


def catalog_tramite_verbs() -> list[str]:
    """Phrases that fit where a template says {v}: an infinitive ("dar de baja las placas")."""
    return _of_kind("verb")


def catalog_tramite_statements() -> list[str]:
    """What a caller tells about the case ("me robaron las placas", "perdí mi licencia"): {s} in a template."""
    return _of_kind("statement")


# ---------------------------------------------------------------------------------------- more caller shapes
# Written apart from the shapes above (issue 12), from how callers in Veracruz talk on the phone: usted and tú,
# "pa'", "ocupo", "agarro", "¿a cómo está?", "¿luego luego?", a feature of the city instead of "atractivos",
# questions that start with the place, and the recognizer's spelling (no accents, no punctuation) of all of it.
CALLER_TOURISM = {
    "ask_attractions": [
        "¿qué lugares hay pa' conocer en {c}?", "¿qué hay de interesante en {c}?", "¿qué me aconseja ver en {c}?",
        "¿qué puedo hacer allá en {c}?", "ando buscando qué hacer en {c}", "vamos de vacaciones a {c}, ¿qué nos recomienda?",
        "¿qué lugares chidos hay en {c}?", "¿a dónde llevo a los niños a pasear en {c}?", "dígame qué hay en {c}",
        "¿qué tiene de atractivo {c}?", "¿hay algo bonito para ver en {c}?", "¿hay balnearios en {c}?",
        "¿qué parques hay en {c}?", "¿qué ofrece {c} a los turistas?", "en {c} qué hay para ver",
        "{c}, ¿qué lugares tiene?", "¿qué conviene visitar en {c}?", "¿me dice qué visitar en {c}?",
        "¿qué hay que conocer sí o sí en {c}?", "recomiéndame algo para ver en {c}", "¿hay ruinas en {c}?",
        "¿qué lugares históricos hay en {c}?", "¿dónde hay playa en {c}?", "¿qué lagunas o ríos hay en {c}?",
        "¿en {c} hay cascadas?", "¿qué cosas bonitas hay en {c}?", "¿qué monumentos tiene {c}?",
        "¿se puede ir de paseo a {c}?", "¿qué tal es {c} para pasear?", "¿qué hago un fin de semana en {c}?",
    ],
    "ask_food": [
        "¿qué se come rico en {c}?", "¿cuál es la comida de {c}?", "¿qué comida hay en {c}?",
        "¿qué platillos típicos tiene {c}?", "¿qué es lo que se come por allá en {c}?", "¿qué hay pa' comer en {c}?",
        "¿dónde como mariscos en {c}?", "¿qué pan típico hay en {c}?", "¿qué café me recomienda de {c}?",
        "recomiéndeme comida de {c}", "¿qué antojitos venden en {c}?", "en {c} qué se come",
        "¿qué es lo más rico de {c}?", "¿qué comida tradicional tiene {c}?", "¿qué se cocina en {c}?",
        "¿qué dulce es de {c}?", "¿qué tengo que probar en {c}?",
    ],
    "ask_festivals": [
        "¿qué fiestas hay en {c}?", "¿cuándo es el carnaval de {c}?", "¿cuándo celebran al santo patrono en {c}?",
        "¿hay festival en {c}?", "¿qué eventos hay en {c}?", "¿tienen fiesta patronal en {c}?",
        "¿en qué mes es la feria de {c}?", "¿cuándo es la fiesta grande en {c}?", "en {c} cuándo son las fiestas",
        "¿qué se festeja en {c}?", "¿hay feria este año en {c}?", "¿en qué fechas hay fiesta en {c}?",
    ],
    "ask_access": [
        "¿cómo le hago para ir a {c}?", "¿cuánto tiempo hago a {c}?", "¿qué autobús agarro para {c}?",
        "¿cómo me voy en camión a {c}?", "¿de {c2} a {c} cuántas horas son?", "¿por dónde agarro para {c}?",
        "¿cuántos kilómetros hay a {c}?", "¿qué tan retirado queda {c}?", "¿sale camión para {c}?",
        "¿cómo llego manejando a {c}?", "¿cuánto hago de {c2} a {c}?", "¿qué carretera agarro para {c}?",
        "¿está cerca {c}?", "¿cómo se va uno a {c}?", "¿en cuánto tiempo llego a {c}?",
    ],
    "ask_tourist_office": [
        "¿hay módulo de información en {c}?", "¿dónde me dan informes turísticos en {c}?",
        "¿tiene teléfono la oficina de turismo de {c}?", "¿dónde queda turismo en {c}?",
        "¿a qué oficina voy en {c} para pedir un mapa?", "¿hay alguien que dé informes a turistas en {c}?",
    ],
}
CALLER_FOLLOWUPS = {
    "ask_attractions": ["¿y allá qué hay?", "¿y qué lugares tiene?", "y que hay para conocer", "¿y qué me recomienda ver?",
                        "¿y hay cascadas?", "¿y playas hay?", "y que lugares bonitos hay"],
    "ask_food": ["¿y qué se come?", "¿y qué hay de comer?", "y la comida tipica", "¿y qué platillo es famoso?",
                 "¿y qué me como allá?"],
    "ask_festivals": ["¿y cuándo es la fiesta?", "¿y qué fiestas hay?", "y cuando es la feria", "¿y el carnaval?"],
    "ask_access": ["¿y cómo me voy?", "¿y cuánto se hace?", "y que carretera agarro", "¿y está lejos?",
                   "¿y en camión?"],
    "ask_tourist_office": ["¿y dónde pido un mapa?", "y la oficina de turismo donde esta"],
}
CALLER_INFORM_CITY = ["{c} por favor", "de {c}, gracias", "sí, {c}", "este, pues {c}", "la de {c}", "ahí en {c}",
                      "{c} veracruz por favor", "es en {c}"]

CALLER_TRAMITE = {
    "ask_tramite_requirements": [
        "¿qué me van a pedir para la {t}?", "¿qué documentos llevo para la {t}?", "¿qué hay que llevar para el {t}?",
        "¿qué requisitos ocupo para {t}?", "¿qué se necesita para la {t}?", "¿qué necesito para tramitar la {t}?",
        "para la {t} qué papeles llevo", "¿qué copias llevo para la {t}?", "¿con qué papeles hago el {t}?",
        "¿qué tengo que juntar para la {t}?", "¿cuáles papeles piden para {t}?",
    ],
    "ask_tramite_cost": [
        "¿cuánto me va a costar la {t}?", "¿cuánto pago por la {t}?", "¿cuánto está la {t}?", "¿a cómo está la {t}?",
        "¿cuánto es de la {t}?", "¿cuánto dinero ocupo para la {t}?", "¿tiene costo la {t}?",
        "la {t} cuánto cuesta", "¿cuánto se paga por sacar el {t}?", "¿cuánto cobran por el {t}?",
    ],
    "ask_tramite_where": [
        "¿dónde hacen la {t}?", "¿en dónde tramito la {t}?", "¿a qué lugar voy para la {t}?",
        "¿en qué módulo saco la {t}?", "¿dónde se saca el {t}?", "¿cuál es la oficina de {t}?",
        "la {t} dónde la saco", "¿a dónde me dirijo para la {t}?", "¿dónde queda la oficina de {t}?",
    ],
    "ask_tramite_hours": [
        "¿a qué hora puedo ir a sacar la {t}?", "¿qué días atienden la {t}?", "¿abren los sábados para {t}?",
        "¿cuál es el horario para {t}?", "¿atienden en la tarde para la {t}?", "¿a qué hora abren para la {t}?",
        "¿hasta qué hora reciben papeles para el {t}?",
    ],
    "ask_tramite_duration": [
        "¿cuántos días se tarda la {t}?", "¿en cuánto tiempo me entregan la {t}?", "¿la {t} me la dan ese mismo día?",
        "¿cuánto tiempo hay que esperar para la {t}?", "¿en cuántos días hábiles sale la {t}?", "¿tarda mucho la {t}?",
        "¿para cuándo está la {t}?", "¿cuánto se tarda el trámite de {t}?", "¿en cuántas semanas sale el {t}?",
        "la {t} en cuántos días me la dan", "¿me dan la {t} luego luego?",
    ],
    "ask_tramite_online": [
        "¿la {t} la puedo sacar por internet?", "¿se puede tramitar la {t} en línea?",
        "¿hay forma de hacer la {t} por internet?", "¿tengo que ir en persona por la {t}?",
        "¿puedo hacer el {t} desde el celular?", "¿la {t} se hace por la página del gobierno?",
        "¿por teléfono puedo sacar la {t}?", "¿la {t} se puede hacer sin salir de casa?",
    ],
    "ask_tramite_info": [
        "quiero sacar mi {t}", "ocupo hacer el {t}", "¿me puede orientar con la {t}?", "ando viendo lo de la {t}",
        "¿me explica cómo es lo de la {t}?", "necesito informes de la {t}", "¿me da información de la {t}?",
        "quiero hacer lo de la {t}", "lo de la {t}, ¿cómo le hago?", "¿qué pasos son para la {t}?",
    ],
}
CALLER_TRAMITE_NO_ENTITY = {
    "ask_tramite_requirements": ["¿y qué me piden?", "¿y qué papeles llevo?", "y que documentos ocupo",
                                 "¿qué tengo que llevar?"],
    "ask_tramite_cost": ["¿y cuánto es?", "¿y a cómo está?", "y cuanto me cobran", "¿cuánto pago?", "¿y eso cuánto sale?"],
    "ask_tramite_where": ["¿y eso dónde se hace?", "y a donde voy", "¿dónde lo saco?", "¿y la oficina dónde queda?"],
    "ask_tramite_hours": ["¿y qué horario tienen?", "¿a qué hora cierran?", "y que dias atienden",
                          "¿abren los sábados?"],
    "ask_tramite_duration": ["¿y cuánto se tarda?", "¿en cuánto tiempo sale?", "y en cuantos dias me lo dan",
                             "¿tarda mucho?", "¿para cuándo estaría?", "¿y cuándo me lo entregan?"],
    "ask_tramite_online": ["¿y eso se puede por internet?", "¿se puede sacar en línea?", "y por internet se puede",
                           "¿tengo que ir yo?", "¿se puede por teléfono?"],
    "ask_tramite_info": ["tengo una duda de un trámite", "quería información de un trámite estatal",
                         "me interesa un trámite"],
}
CALLER_STATIC = {
    "greet": ["bueno, buenas tardes", "sí, hola, buenas", "hola, buen día señorita", "buenas tardes, ¿es turismo?",
              "¿bueno, me escucha?", "qué tal, buen día"],
    "goodbye": ["eso sería todo, gracias, adiós", "ya es todo, muchas gracias, bye", "no, ya con eso, hasta luego",
                "gracias, que tenga buen día, adiós", "ya no ocupo más, gracias, hasta luego", "bueno, bye",
                "ándele pues, hasta luego", "sale, gracias, bye", "es todo, buenas noches"],
    "thanks": ["ah, ok, gracias", "ándale, gracias", "muy bien, gracias", "gracias, muy amable señorita",
               "ah, perfecto, gracias"],
    "affirm": ["sí, claro", "sí, por favor", "ajá, sí", "eso", "sí, así es", "sí, ándele", "sí, dígame más"],
    "deny": ["no, ya no, gracias", "no, nada más eso", "no, así déjelo", "no, ahorita no", "no, mejor no"],
    "request_agent": ["quiero hablar con un asesor por favor", "páseme con alguien", "¿me comunica con una persona?",
                      "ya no quiero la grabación, páseme con alguien", "necesito un operador", "con un agente por favor",
                      "comuníqueme con alguien que me atienda"],
    "help": ["¿qué puedo hacer?", "¿qué información me puede dar?", "¿para qué sirve esta línea?",
             "¿qué servicios tienen?"],
    "repeat": ["¿me lo puede repetir?", "perdón, no le escuché", "¿cómo?", "otra vez por favor", "¿qué me dijo?"],
    "check_status": ["quiero saber cómo va mi trámite", "¿me dice en qué va mi trámite?", "quiero consultar mi trámite",
                     "le hablo para saber de mi trámite", "ya hice un trámite y quiero ver si ya está",
                     "¿ya está listo lo mío?", "quería checar el estatus de mi solicitud", "¿cómo va mi solicitud?",
                     "tengo mi número de folio, ¿me dice cómo va?", "consultar el estado de mi trámite"],
    "start_tramite": ["quiero hacer un trámite desde aquí por teléfono", "¿puedo hacer mi solicitud por aquí?",
                      "quiero levantar una solicitud", "quiero empezar una solicitud por teléfono"],
    "tourism": ["quiero información de lugares para visitar", "¿qué lugares de Veracruz me recomienda?",
                "vamos a ir de paseo, ¿qué me recomienda?", "quiero saber de turismo", "lo de turismo"],
    "out_of_scope": ["¿me da el número del hospital?", "¿cuánto cuesta el boleto del ADO?", "quiero pedir un préstamo",
                     "¿dónde está la farmacia?", "¿cómo está el clima en el puerto?", "quiero pagar mi recibo de teléfono"],
}



# ---------------------------------------------------------------------------------------- held-out sets stay out
HELD_OUT_SPLIT = ROOT / "nlu_data" / "test"
HELD_OUT_EVAL = ROOT / "bench" / "nlu_eval"
SHORT_TURN_WORDS = 3
"""Turns this short ("gracias", "¿y cuánto cuesta?") are the closed vocabulary of a phone dialogue: training must
have them whatever an evaluation set says. Longer ones that a template happens to produce are dropped."""


def comparable(text: str) -> str:
    """An example as a held-out turn is compared: annotations, case, accents and punctuation removed."""
    text = re.sub(r"\[([^\]]+)\](\([^)]*\)|\{[^}]*\})", r"\1", text)
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[¿?¡!,.;:]", " ", text).split())


def held_out_turns() -> tuple[frozenset[str], frozenset[str]]:
    """(every example of the held-out split, the longer turns of the independent evaluation set), comparable.

    Read only to keep a generated row that happens to equal one of them out of training; nothing in them feeds a
    template."""
    import yaml
    split = set()
    for path in sorted(HELD_OUT_SPLIT.glob("*.yml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("- ") and not line.startswith("- intent"):
                split.add(comparable(line[2:]))
    turns = set()
    for path in sorted(HELD_OUT_EVAL.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for item in doc.get("items") or []:
            for turn in item.get("turns") or [item]:
                said = comparable(str(turn.get("text", "")))
                if len(said.split()) > SHORT_TURN_WORDS:
                    turns.add(said)
    return frozenset(split), frozenset(turns)


def held_out(row: str, kept_out: tuple[frozenset[str], frozenset[str]]) -> bool:
    said = comparable(row)
    return said in kept_out[0] or said in kept_out[1]


def main() -> None:
    rng = random.Random(5)
    speaker = Speaker(rng)
    city_forms = catalog_city_forms()
    cities = itertools.cycle(rng.sample(city_forms, len(city_forms)))
    trams = itertools.cycle(rng.sample(catalog_tramite_names(), len(catalog_tramite_names())))
    blocks: dict[str, list[str]] = {}

    def said(tpl: str, reps: int, fill: Callable[[str, bool], str]) -> list[str]:
        rows = []
        for i in range(reps):
            asr = rng.random() < 0.35
            text = fill(tpl, asr)
            clean = i == 0 and (reps > 1 or rng.random() < 0.4)
            rows.append(text if clean else speaker.dress(text, asr))
        return rows

    def tourism_fill(tpl: str, asr: bool) -> str:
        c, c2 = next(cities), next(cities)
        wrap = c[1] != "Veracruz" and rng.random() < 0.3
        text = tpl.format(c=speaker.city(c, wrap, asr), c2=speaker.city(c2, False, asr))
        return text

    for intent, templates in TOURISM.items():
        rows = [r for tpl in templates for r in said(tpl, 2, tourism_fill)]
        rows += [r for tpl in TOURISM_MORE[intent] + CALLER_TOURISM[intent] for r in said(tpl, 1, tourism_fill)]
        follow = FOLLOWUPS[intent] + FOLLOWUPS_MORE[intent] + CALLER_FOLLOWUPS[intent]
        rows += follow + [speaker.dress(f, rng.random() < 0.5) for f in follow]
        blocks[intent] = rows
    blocks["inform_city"] = [r for tpl in INFORM_CITY + INFORM_CITY_MORE + CALLER_INFORM_CITY for r in said(tpl, 2, tourism_fill)]

    def tramite_fill(tpl: str, asr: bool) -> str:
        return fill_tramite(tpl, next(trams), speaker, asr)

    verb_list = catalog_tramite_verbs()
    verbs = itertools.cycle(rng.sample(verb_list, len(verb_list)))
    statement_list = catalog_tramite_statements()
    statements = itertools.cycle(rng.sample(statement_list, len(statement_list)))

    def statement_fill(tpl: str, asr: bool) -> str:
        return tpl.format(s=speaker.tram(next(statements), asr))

    def verb_fill(tpl: str, asr: bool) -> str:
        return tpl.format(v=speaker.tram(next(verbs), asr))

    for intent in (*TRAMITE_TEMPLATES, "ask_tramite_duration", "ask_tramite_online"):
        rows = [r for tpl in TRAMITE_TEMPLATES.get(intent, []) for r in said(tpl, 2, tramite_fill)]
        rows += [r for tpl in TRAMITE_MORE[intent] for r in said(tpl, 2, tramite_fill)]
        rows += [r for tpl in CALLER_TRAMITE[intent] for r in said(tpl, 1, tramite_fill)]
        rows += [r for tpl in VERB_TEMPLATES.get(intent, []) for r in said(tpl, 2, verb_fill)]
        rows += [r for tpl in STATEMENT_TEMPLATES.get(intent, []) for r in said(tpl, 2, statement_fill)]
        plain = TRAMITE_NO_ENTITY.get(intent, []) + TRAMITE_NO_ENTITY_MORE[intent] + CALLER_TRAMITE_NO_ENTITY[intent]
        rows += plain + [speaker.dress(p, rng.random() < 0.5) for p in plain]
        blocks[intent] = rows
    blocks["inform_tramite"] = [r for tpl in INFORM_TRAMITE for r in said(tpl, 3, tramite_fill)] + INFORM_TRAMITE_SHORT
    blocks["start_tramite"] = STATIC["start_tramite"] + START_PLAIN + CALLER_STATIC["start_tramite"] + [
        r for tpl in START_TEMPLATES for r in said(tpl, 2, tramite_fill)] + [
        speaker.dress(p, rng.random() < 0.5, indirect=False) for p in START_PLAIN]
    blocks["inform_number"] = STATIC["inform_number"] + number_examples(rng, 30)
    for intent, rows in STATIC.items():
        if intent in blocks:
            continue
        more = STATIC_MORE.get(intent, []) + CALLER_STATIC.get(intent, []) + (OUT_OF_SCOPE_MORE if intent == "out_of_scope" else [])
        base = rows + more
        # the recognizer's spelling of the same turns, and a hesitant opening for the requests
        extra = [asr_form(r) for r in base]
        if intent in ("check_status", "tourism", "request_agent", "help"):
            extra += [speaker.dress(r, rng.random() < 0.5, indirect=False) for r in base]
        blocks[intent] = base + extra
    kept_out = held_out_turns()
    lines = ["# GENERATED by dialogs/tools/gen_nlu.py from its templates: edit the templates, then re-run.",
             'version: "3.1"', "nlu:"]
    total = 0
    for intent, rows in blocks.items():
        lines.append(f"  - intent: {intent}")
        lines.append("    examples: |")
        seen = set()
        for row in rows:
            key = row.lower()
            if key not in seen and row.strip() and not held_out(row, kept_out):
                seen.add(key)
                lines.append(f"      - {row}")
                total += 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({total} examples, {len(blocks)} intents)")


if __name__ == "__main__":
    main()
