"""Speech in several languages for the multilingual transcriber and the judge, spoken by espeak-ng.

Per language: educational and chit-chat sentences (the judge's ranking), written with the language's
own accents; plus a Mandarin and a Japanese sentence for CER.  ``speak`` turns a sentence into an MP3
at 48 kHz, as Common Voice ships clips.  Needs Debian's ``espeak-ng`` (scripts/install.sh brings it).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 48_000
# espeak-ng voice per Common Voice locale.
# Debian's espeak-ng has too few hanzi in its Mandarin dictionary (it spells the rest as English), so
# Mandarin is spoken from pinyin (SPOKEN); Japanese is written in kana, which its dictionary reads.
VOICES = {
    "en": "en-us", "es": "es", "fr": "fr+m3", "de": "de", "it": "it", "pt": "pt", "zh-CN": "cmn-latn-pinyin",
    "ja": "ja", "yue": "yue", "sr": "sr", "hi": "hi", "ta": "ta", "bn": "bn", "th": "th", "mr": "mr", "ml": "ml",
}  # fmt: skip

SENTENCES: dict[str, dict[str, list[str]]] = {
    "es": {
        "educational": [
            "La fotosíntesis convierte la luz del sol en energía química.",
            "El corazón bombea la sangre a través de todo el cuerpo.",
            "El agua hierve a cien grados en el nivel del mar.",
            "Los volcanes se forman donde el magma sube a la superficie.",
            "La Tierra tarda un año en dar la vuelta al Sol.",
            "Las abejas polinizan muchas de las plantas que comemos.",
            "El cobre conduce la electricidad mejor que el hierro.",
            "Los músculos necesitan oxígeno para producir energía.",
        ],
        "chitchat": [
            "Jaja, nos vemos mañana en la fiesta.",
            "¿Qué tal tu fin de semana, todo bien?",
            "Me encanta esa canción, la pongo siempre.",
            "Oye, ¿pedimos una pizza esta noche?",
            "Qué calor hace hoy, no aguanto más.",
            "Mi gato se durmió otra vez en el sofá.",
            "Vale, te llamo luego, un beso.",
            "¡Qué bien que viniste, lo pasamos genial!",
        ],
    },
    "fr": {
        "educational": [
            "La photosynthèse transforme la lumière du soleil en énergie chimique.",
            "Le cœur pompe le sang dans tout le corps.",
            "L'eau bout à cent degrés au niveau de la mer.",
            "Les volcans se forment là où le magma remonte à la surface.",
            "La Terre met un an pour faire le tour du Soleil.",
            "Les abeilles pollinisent beaucoup des plantes que nous mangeons.",
            "Le cuivre conduit l'électricité mieux que le fer.",
            "Les muscles ont besoin d'oxygène pour produire de l'énergie.",
        ],
        "chitchat": [
            "Haha, on se voit demain à la fête.",
            "Alors, ton week-end, ça s'est bien passé ?",
            "J'adore cette chanson, je l'écoute tout le temps.",
            "Dis, on commande une pizza ce soir ?",
            "Il fait trop chaud aujourd'hui, j'en peux plus.",
            "Mon chat s'est encore endormi sur le canapé.",
            "D'accord, je t'appelle plus tard, bisous.",
            "Trop bien que tu sois venu, on s'est éclatés !",
        ],
    },
    "de": {
        "educational": [
            "Die Photosynthese wandelt Sonnenlicht in chemische Energie um.",
            "Das Herz pumpt das Blut durch den ganzen Körper.",
            "Wasser kocht auf Meereshöhe bei hundert Grad.",
            "Vulkane entstehen dort, wo Magma an die Oberfläche steigt.",
            "Die Erde braucht ein Jahr, um die Sonne zu umkreisen.",
            "Bienen bestäuben viele der Pflanzen, die wir essen.",
            "Kupfer leitet Strom besser als Eisen.",
            "Muskeln brauchen Sauerstoff, um Energie zu erzeugen.",
        ],
        "chitchat": [
            "Haha, wir sehen uns morgen auf der Party.",
            "Na, wie war dein Wochenende?",
            "Ich liebe dieses Lied, ich höre es ständig.",
            "Sag mal, bestellen wir heute Abend Pizza?",
            "Heute ist es so heiß, ich halte es nicht mehr aus.",
            "Meine Katze ist schon wieder auf dem Sofa eingeschlafen.",
            "Okay, ich ruf dich später an, tschüss.",
            "Schön, dass du da warst, es war super!",
        ],
    },
    "zh-CN": {
        "educational": ["地球绕着太阳转。", "水在一百度时沸腾。"],
        "chitchat": ["今天天气很好。", "我们喜欢喝茶。"],
    },
    "ja": {"educational": ["わたしはがくせいです。"], "chitchat": ["こんにちは、げんきですか。"]},
    # Written in Cyrillic, as Common Voice's Serbian sentences are; Whisper writes Serbian in Latin letters.
    "sr": {
        "educational": [
            "Вода кључа на сто степени.",
            "Сунце излази на истоку.",
            "Срце пумпа крв кроз цело тело.",
            "Земља обиђе Сунце за годину дана.",
        ],
        "chitchat": [
            "Добар дан, како сте?",
            "Видимо се сутра на журци.",
            "Моја мачка опет спава на каучу.",
            "Хајде да наручимо пицу вечерас.",
        ],
    },
    # Scripts whose vowels are marks (docs/curation.md "Vowel signs are letters").  base hears espeak-ng's
    # voices for them poorly: these measure the agreement rules more than the model.
    "hi": {
        "educational": ["पानी सौ डिग्री पर उबलता है।", "सूरज पूर्व में उगता है।", "दिल खून को पूरे शरीर में पंप करता है।"],
        "chitchat": ["मैं आज बाज़ार जा रहा हूँ।", "बच्चे स्कूल में पढ़ते हैं।", "कल बारिश होगी।"],
    },
    "ta": {
        "educational": ["தண்ணீர் நூறு டிகிரியில் கொதிக்கும்.", "சூரியன் கிழக்கில் உதிக்கிறது."],
        "chitchat": ["நான் இன்று கடைக்குப் போகிறேன்.", "குழந்தைகள் பள்ளியில் படிக்கிறார்கள்."],
    },
    "bn": {
        "educational": ["সূর্য পূর্ব দিকে ওঠে।", "জল একশো ডিগ্রিতে ফোটে।"],
        "chitchat": ["আমি আজ বাজারে যাচ্ছি।", "শিশুরা স্কুলে পড়ে।"],
    },
    "th": {
        "educational": ["พระอาทิตย์ขึ้นทางทิศตะวันออก", "น้ำเดือดที่หนึ่งร้อยองศา"],
        "chitchat": ["ฉันไปตลาดวันนี้", "เด็กๆ เรียนที่โรงเรียน"],
    },
    "mr": {"educational": ["सूर्य पूर्वेला उगवतो."], "chitchat": ["मी आज बाजारात जात आहे.", "मुले शाळेत शिकतात."]},
    "ml": {"educational": ["സൂര്യൻ കിഴക്ക് ഉദിക്കുന്നു."], "chitchat": ["ഞാൻ ഇന്ന് ചന്തയിൽ പോകുന്നു.", "കുട്ടികൾ സ്കൂളിൽ പഠിക്കുന്നു."]},
}
# What espeak-ng reads aloud where it differs from the written sentence.
SPOKEN = {
    "地球绕着太阳转。": "di4 qiu2 rao4 zhe5 tai4 yang2 zhuan4",
    "水在一百度时沸腾。": "shui3 zai4 yi4 bai3 du4 shi2 fei4 teng2",
    "今天天气很好。": "jin1 tian1 tian1 qi4 hen3 hao3",
    "我们喜欢喝茶。": "wo3 men5 xi3 huan1 he1 cha2",
}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, locale: str, speed: int = 150, voice: str | None = None) -> tuple[bytes, float]:
    """``text`` spoken by espeak-ng in ``locale``'s voice (or ``voice``, an accent): (MP3 bytes at 48 kHz,
    seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        said = SPOKEN.get(text, text)
        subprocess.run(["espeak-ng", "-v", voice or VOICES[locale], "-s", str(speed), "-w", str(wav), said], check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        audio, rate = sf.read(wav, dtype="float32")
    audio = soxr.resample(audio, rate, RATE)
    audio = (audio * (0.5 / max(float(np.abs(audio).max()), 1e-6))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, audio, RATE, format="MP3")
    return buf.getvalue(), len(audio) / RATE


def clips(locale: str) -> list[tuple[bytes, str, float, str]]:
    """(mp3, sentence, seconds, label) for every sentence of ``locale``."""
    out = []
    for label, sentences in SENTENCES[locale].items():
        for s in sentences:
            data, seconds = speak(s, locale)
            out.append((data, s, seconds, label))
    return out
