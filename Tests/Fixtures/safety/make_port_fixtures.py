#!/usr/bin/env python3
"""Writes port_cases.json: texts with the original tox-block and hatesonar outputs.

Expected values come only from the packages themselves, run on their own model files:
tox-block's `make_predictions` (rescaled, the default), its encoder and Keras model for the raw
sigmoid outputs and token ids, and hatesonar's `Sonar().ping`. The Swift ports
(ToxBlockClassifierTests, HateSonarClassifierTests) and Training/ports/*.py are checked
against them.

tox-block needs TensorFlow with Keras 2: its .h5 (Keras 2.2.4-tf) uses `hard_sigmoid`, which
Keras 2 defines as clip(0.2x + 0.5, 0, 1) and Keras 3 as relu6(x + 3) / 6, so loading it with
Keras 3 silently changes the model. TF_USE_LEGACY_KERAS=1 with tf-keras gives Keras 2.
hatesonar's onnxruntime needs the en_US.UTF-8 locale (LOCPATH points at the one
scripts/fetch-safety-ports.sh compiles when the system lacks it). The reference venv (~1.5 GB,
not needed by anything else):

    CACHE=${ALIGND_CACHE_DIR:-.build-cache}
    python3.11 -m venv $CACHE/venv-ports-ref
    $CACHE/venv-ports-ref/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 \\
        keras-preprocessing==1.1.2 pandas==3.1.1 scikit-learn==1.9.1 onnxruntime==1.31.1
    $CACHE/venv-ports-ref/bin/pip install --no-deps tox-block==0.1.2 hatesonar==0.1.0
    LOCPATH=$CACHE/locale $CACHE/venv-ports-ref/bin/python Tests/Fixtures/safety/make_port_fixtures.py

It also runs Training/ports/*.py on the converted files (models folder) and prints their
largest differences from the packages.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import unicodedata  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
CLASSES = ["hate_speech", "offensive_language", "neither"]

BENIGN = [
    "Thanks for the quick reply, that fixed my problem.",
    "Could you please send me the invoice for last month?",
    "The weather in Lisbon is lovely this time of year.",
    "Happy birthday! Hope you have a wonderful day.",
    "Can someone explain how gradient descent works?",
    "Please add a citation for the claim in the second paragraph.",
    "I reverted your edit because it removed sourced content.",
    "Welcome to Wikipedia! Here are some tips to get you started.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Our team shipped the new release on Tuesday.",
    "Let's schedule the meeting for 10:30 tomorrow.",
    "The kids loved the dinosaur exhibit at the museum.",
    "We should discuss this on the talk page before reverting again.",
    "The experiment was repeated three times with consistent results.",
    "Kill the process with Ctrl+C if it hangs.",
    "The shooting star was visible from the whole valley.",
    "He was wounded in the battle and later defended the fort.",
    "Breast cancer screening saves lives.",
    "The victims' families attended the memorial service.",
    "Scunthorpe United won the match 2-1.",
    "I hate waiting in line at the post office.",
    "This movie was boring and far too long.",
    "I disagree with your reading of the source; it says the opposite.",
    "Muslims, Christians and Jews all celebrate holidays in December.",
    "The gay rights movement has a long history in San Francisco.",
    "Black holes bend light around them.",
    "The article about the Holocaust needs more sources.",
    "Immigrants founded many of the country's largest companies.",
    "My grandmother taught me how to knit.",
    "The bomb squad safely removed the old shell from the beach.",
    "That comedian absolutely killed it last night!",
    "I'm dying to see the new season.",
    "The knife is in the second drawer, next to the forks.",
    "The hunters shot two deer during the season.",
    "She beat her personal record in the marathon.",
]

TOXIC = [
    "You are a fucking idiot.",
    "Shut up, you stupid bitch.",
    "This is bullshit and you know it.",
    "What the fuck is wrong with you?",
    "Go to hell, asshole.",
    "You're such a pathetic loser.",
    "Fuck off and stop editing my page.",
    "Your mom is a whore.",
    "Stop being a dick.",
    "You morons ruined the article.",
    "Eat shit and die.",
    "You absolute cunt.",
    "Screw you and your stupid rules.",
    "Holy shit, that was amazing!",
    "Damn, this pizza is good as hell.",
    "You fat ugly pig.",
    "Hey jackass, read the rules.",
    "WTF is this shit?",
    "you are not an idiot",
    "Only a moron would believe that.",
    "lol these hoes aint loyal",
    "that bitch stole my phone",
    "You're a worthless waste of oxygen and everyone hates you.",
    "Nobody wants you here, go crawl back under your rock.",
    "Your writing is so bad it's embarrassing, you clueless amateur.",
]

THREATS = [
    "I will kill you.",
    "I know where you live and I will find you.",
    "I'm going to beat the crap out of you tomorrow.",
    "If you revert my edit again I will burn your house down.",
    "You'd better watch your back, something bad is coming.",
    "I will hunt you down and make you suffer.",
    "Someone should put a bullet in his head.",
    "I hope you die in a car crash.",
    "Keep talking and I'll break your legs.",
    "We are going to shoot up the school on Monday.",
]

HATE = [
    "All immigrants are criminals and should be thrown out.",
    "Muslims are terrorists, every single one of them.",
    "Jews control the banks and the media.",
    "Gay people are disgusting and should not be allowed near children.",
    "Women are too stupid to vote.",
    "Black people are lazy and violent.",
    "Go back to your own country.",
    "These foreigners are animals, not humans.",
    "Kill all the infidels.",
    "Trans people are mentally ill freaks.",
    "I hate all of those people, they ruin everything.",
    "Mexicans are rapists and drug dealers.",
]

EDGE = [
    "",
    " ",
    "\n\t  \r\n",
    "a",
    "!!!",
    "?!?!... --- ***",
    "@#$%^&*()_+{}|:<>?",
    "...",
    "12345",
    "3.14159 2.71828 1,000,000",
    "Call me at 555-0199 after 5pm",
    "FUCK YOU",
    "FuCk YoU",
    "f u c k",
    "f*ck you",
    "f.u.c.k",
    "sh1t",
    "fück",
    "ｆｕｃｋ ｙｏｕ",
    "İDİOT",
    "idiot",
    "IDIOT",
    "\u212aILL YOU",
    "ΣΑΣ ΑΣ Σ",
    "Straße STRASSE",
    "Beyonce\u0301 is an idiot",
    "fuck you 😡",
    "fuck😡you",
    "😀😀😀",
    "🖕",
    "you are an idiot 🤬🤬",
    "I ❤️ this place",
    "Это тест, идиот",
    "Du bist ein Arschloch",
    "これはテストです",
    "هذا اختبار",
    "zero\u200bwidth\u200bspace fuck\u200byou",
    "non\u00a0breaking\u00a0space idiot",
    "tab\tseparated\tstupid",
    "line\nbreak\nbitch",
    "carriage\rreturn\rmoron",
    "under_score_idiot",
    "hyphen-ated-idiot",
    "don't won't can't isn't",
    "don’t be a jerk",
    "http://example.com/fuck?q=shit&x=1",
    "someone@example.com",
    "#hashtag @mention $money",
    "<b>stupid</b> <i>html</i>",
    "[[User talk:Example|talk]] ~~~~",
    "RT @someone: this is so dumb",
    "the the the the the",
    "idiot " * 150,
    "thank you " * 80 + "you stupid idiot",
    "you stupid idiot " + "thank you " * 80,
    ("The committee met on Tuesday to review the budget proposal, and after a long discussion "
     "about schools, roads, parks and the library, they agreed to postpone the vote. ") * 4
    + "Honestly the chairman is a corrupt lying bastard.",
    " ".join(f"word{i}" for i in range(130)),
    "a " * 120,
]

TEMPLATES = ["{a} {b}", "you {a} {b}", "{A} {B}!", "this is {a} and {b}", "i think {a} is {b}"]


def variants(rng: random.Random, n: int) -> list:
    """Mixes of benign and offensive words in short templates."""
    benign = [w for s in BENIGN for w in s.lower().split() if w.isalpha()]
    offensive = [w for s in TOXIC + THREATS + HATE for w in s.lower().split() if w.isalpha()]
    out = []
    for i in range(n):
        a = rng.choice(benign if i % 3 else offensive)
        b = rng.choice(offensive if i % 2 else benign)
        out.append(rng.choice(TEMPLATES).format(a=a, b=b, A=a.upper(), B=b.title()))
    return out


def mutate(rng: random.Random, texts: list) -> list:
    out = []
    for text in texts:
        kind = rng.randrange(4)
        if kind == 0:
            out.append(text.upper())
        elif kind == 1:
            out.append(text.replace(" ", "  ").replace(".", " ... "))
        elif kind == 2:
            out.append(text + " " + rng.choice(["😂", "🙄", "!!!", "lol", "1234", "#wtf"]))
        else:
            out.append("".join(c.upper() if rng.random() < 0.5 else c for c in text))
    return out


def corpus() -> list:
    rng = random.Random(20261207)
    texts = BENIGN + TOXIC + THREATS + HATE + EDGE
    texts += mutate(rng, rng.sample(BENIGN + TOXIC + THREATS + HATE, 30))
    texts += variants(rng, 20)
    seen, unique = set(), []
    for text in texts:
        if text not in seen:
            seen.add(text)
            unique.append(text)
    return unique


def f32(values) -> list:
    return [float(np.float32(v)) for v in values]


def main() -> None:
    from hatesonar import Sonar
    from tox_block.prediction import _encoder, _model, _rescale_proba, make_predictions
    from tox_block.config import config

    texts = corpus()

    # tox-block: the package's own prediction for every text it accepts (it refuses "").
    accepted = [t for t in texts if t != ""]
    predicted = make_predictions(accepted)
    by_text = {predicted[i]["text"]: predicted[i] for i in range(len(accepted))}
    frame = pd.DataFrame(texts, columns=["text"])
    ids = _encoder.transform(frame)
    raw = _model.predict(ids, verbose=0)
    refused = {}
    for row, text in enumerate(texts):
        if text == "":  # what make_predictions would give, had it not refused the text
            rescaled = [_rescale_proba(raw[row][k], *config.RESCALE_PROBA[label]) for k, label in enumerate(LABELS)]
            refused[text] = {label: v for label, v in zip(LABELS, rescaled)}

    sonar = Sonar()
    cases = []
    for row, text in enumerate(texts):
        scores = by_text.get(text, refused.get(text))
        pinged = sonar.ping(text=text)
        sequence = [int(i) for i in ids[row]]
        first = next((k for k, i in enumerate(sequence) if i != 0), len(sequence))
        cases.append({
            "text": text,
            "toxblock": {
                "ids": sequence[first:],  # the encoder pads with zeros in front to 100
                "raw": f32(raw[row]),
                "scores": f32([scores[label] for label in LABELS]),
                "package_refuses": text == "",
            },
            "hatesonar": {
                "probabilities": f32([c["confidence"] for c in pinged["classes"]]),
                "top_class": pinged["top_class"],
            },
        })
    assert [c["class_name"] for c in pinged["classes"]] == CLASSES

    out = {
        "generator": "Tests/Fixtures/safety/make_port_fixtures.py",
        "tox_block": metadata.version("tox-block"),
        "hatesonar": metadata.version("hatesonar"),
        "tensorflow": metadata.version("tensorflow-cpu"),
        "tf_keras": metadata.version("tf-keras"),
        "keras_preprocessing": metadata.version("keras-preprocessing"),
        "onnxruntime": metadata.version("onnxruntime"),
        "python": platform.python_version(),
        "unicode_version": unicodedata.unidata_version,
        "labels": LABELS,
        "classes": CLASSES,
        "cases": cases,
    }
    path = Path(__file__).with_name("port_cases.json")
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}: {len(cases)} cases")

    # The numpy references on the converted files, when they are there (loaded by path: the
    # package hatesonar shadows Training/ports/hatesonar.py on sys.path).
    import importlib.util

    ports = Path(__file__).resolve().parents[3] / "Training" / "ports"

    def load(name):
        spec = importlib.util.spec_from_file_location(f"port_{name}", ports / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    try:
        toxblock, hatesonar = load("toxblock").ToxBlock(), load("hatesonar").HateSonar()
    except FileNotFoundError as error:
        print(f"references not checked: {error}")
        return
    expected_t = np.array([c["toxblock"]["scores"] for c in cases])
    expected_r = np.array([c["toxblock"]["raw"] for c in cases])
    expected_h = np.array([c["hatesonar"]["probabilities"] for c in cases])
    print("Training/ports/toxblock.py   max |diff| rescaled", np.abs(toxblock.predict(texts) - expected_t).max(),
          "raw", np.abs(toxblock.predict(texts, rescale=False) - expected_r).max())
    print("Training/ports/hatesonar.py  max |diff|", np.abs(hatesonar.predict(texts) - expected_h).max())


if __name__ == "__main__":
    main()
