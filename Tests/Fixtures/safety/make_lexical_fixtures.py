#!/usr/bin/env python3
"""Writes lexical_cases.json: texts with alt-profanity-check's own predictions.

Run with the venv that scripts/fetch-safety-model.sh creates (it has the pinned
alt-profanity-check and scikit-learn):

    ${ALIGND_CACHE_DIR:-.build-cache}/venv-safety/bin/python \
        Tests/Fixtures/safety/make_lexical_fixtures.py

Expected values come only from `profanity_check.predict_prob` and `profanity_check.predict`;
the texts below are inputs. They mix realistic benign and offensive messages with variants
that stress the tokenizer: case, punctuation, digits, underscores, emoji, accents (composed and
decomposed), Greek final sigma, Turkish dotted I, the Kelvin sign, full-width letters, CJK,
zero-width characters, whitespace only and the empty string.
"""

import json
import platform
import random
import unicodedata
from importlib import metadata
from pathlib import Path

import sklearn
from profanity_check import predict, predict_prob

BENIGN = [
    "Thanks for the quick reply, that fixed my problem.",
    "Could you please send me the invoice for last month?",
    "The weather in Lisbon is lovely this time of year.",
    "I really appreciate your help with the migration.",
    "What time does the pharmacy open on Sundays?",
    "Please add a citation for the claim in the second paragraph.",
    "The article has been nominated for deletion; feel free to comment on the discussion page.",
    "I reverted your edit because it removed sourced content.",
    "Happy birthday! Hope you have a wonderful day.",
    "Our team shipped the new release on Tuesday.",
    "Can someone explain how gradient descent works?",
    "The museum's new exhibition covers early medieval manuscripts.",
    "I apologize for the confusion earlier, here is the corrected table.",
    "Welcome to Wikipedia! Here are some tips to get you started.",
    "Studies have shown that regular exercise improves sleep quality.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Please review the pull request when you have a moment.",
    "My flight was delayed by three hours but the crew was great.",
    "The conference paper was accepted, thank you all for the feedback.",
    "How do I reset my password?",
    "This hotel was clean, quiet and close to the station.",
    "The BBC reported that the bridge will reopen in November.",
    "I think the infobox should list the population from the 2020 census.",
    "Let's schedule the meeting for 10:30 tomorrow.",
    "The kids loved the dinosaur exhibit at the natural history museum.",
    "Our cat knocked a glass off the table again this morning.",
    "Is there a vegetarian option on the menu?",
    "The pilot announced we would land twenty minutes early.",
    "Could you clarify what you mean by 'neutral point of view'?",
    "The experiment was repeated three times with consistent results.",
    "Good morning everyone, the standup starts in five minutes.",
    "I'm looking for a good book about the history of Rome.",
    "The stores close early on public holidays.",
    "Thank you for defending the article against vandalism.",
    "The tutorial explains how to install Python on Windows.",
    "She won the chess tournament for the third year in a row.",
    "Please don't forget to water the plants while I'm away.",
    "The train to Porto leaves from platform 4.",
    "That was a really insightful talk about distributed systems.",
    "The saint's feast day is celebrated in early June.",
    "I've added references to the peer-reviewed studies you mentioned.",
    "The dog park is closed for maintenance until Friday.",
    "Can we move the deadline to next week?",
    "The soup was a bit salty but otherwise delicious.",
    "Your contributions to the chemistry articles are appreciated.",
    "We should discuss this on the talk page before reverting again.",
    "The convicted man's appeal will be heard in Dallas next month.",
    "Bisexual and transgender rights were discussed at the panel.",
    "The victims' families attended the memorial service.",
    "The leaked memo identifies significant budget problems.",
    "Homo sapiens appeared in Africa around 300,000 years ago.",
    "He was wounded in the battle and later defended the fort.",
    "Please stop adding unsourced material to biographies of living persons.",
    "The dam burst after days of heavy rain.",
    "Kill the process with Ctrl+C if it hangs.",
    "The shooting star was visible from the whole valley.",
    "My code crashes when the input file is empty, any idea why?",
    "I hate waiting in line at the post office.",
    "This movie was boring and far too long.",
    "The referee made a terrible call in the second half.",
    "I disagree with your reading of the source; it says the opposite.",
    "The drug trial was stopped because of side effects.",
    "Breast cancer screening saves lives.",
    "The cock crowed at dawn and woke the whole farm.",
    "Hell's Kitchen is a neighborhood in Manhattan.",
    "Scunthorpe United won the match 2-1.",
    "The bass player from the band signed autographs.",
    "Dick Grayson was the first Robin in the comics.",
    "A pussy willow is a kind of shrub with soft catkins.",
    "The damn on the river holds back a large reservoir.",
]

OFFENSIVE = [
    "You are a fucking idiot.",
    "Shut up, you stupid bitch.",
    "This is bullshit and you know it.",
    "What the fuck is wrong with you?",
    "Go to hell, asshole.",
    "You're such a pathetic loser.",
    "Fuck off and stop editing my page.",
    "He's a dumbass and a liar.",
    "Your mom is a whore.",
    "Stop being a dick.",
    "This shitty app crashed again.",
    "You morons ruined the article.",
    "Piss off, nobody asked you.",
    "What a bunch of idiots running this site.",
    "You suck at this game, noob.",
    "Eat shit and die.",
    "Don't be such a jerk about it.",
    "That's the dumbest thing I've ever read, moron.",
    "Get lost, you worthless piece of crap.",
    "You absolute cunt.",
    "Motherfucker stole my bike.",
    "I'm so fucking tired of this crap.",
    "Are you retarded or something?",
    "Screw you and your stupid rules.",
    "Holy shit, that was amazing!",
    "Damn, this pizza is good as hell.",
    "Fuck yeah, we won the match!",
    "This bastard keeps vandalizing the page.",
    "Kiss my ass.",
    "You imbecile, read the source before reverting.",
    "Wow, what a hypocrite you are.",
    "Shut your mouth, dickhead.",
    "You're a pussy if you don't try it.",
    "What a dipshit move.",
    "Goddamn it, the build failed again.",
    "Stupid admins banning everyone.",
    "Go fuck yourself.",
    "Bitches be crazy.",
    "That guy is a total douchebag.",
    "You're an idiotic troll.",
    "Only a moron would believe that.",
    "Your edits are garbage, you clown.",
    "I will kick your ass.",
    "You fat ugly pig.",
    "Get the hell out of here.",
    "This is so dumb it hurts.",
    "Hey jackass, read the rules.",
    "Fucking hell, not again.",
    "WTF is this shit?",
    "Suck it, losers.",
]

# Variants that stress tokenisation: punctuation, case, unicode and other edge cases.
EDGE = [
    "",
    " ",
    "\n\t  \r\n",
    "a",
    "ab",
    "I",
    "fuck",
    "FUCK",
    "Fuck",
    "fUcK",
    "f u c k",
    "f*ck",
    "f.u.c.k",
    "fuuuuuck",
    "sh!t",
    "sh1t",
    "shit!!!!!!",
    "!!!shit???",
    "shit_head",
    "shit-head",
    "shit'head",
    "shit's",
    "ass123",
    "123ass",
    "ass 123",
    "fuck you 😡",
    "fuck😡you",
    "😀😀😀",
    "🖕",
    "I ❤️ this place",
    "👍 great job",
    "you are an idiot 🤬🤬",
    "ｆｕｃｋ ｙｏｕ",  # full-width letters: lowercase to full-width, not ASCII
    "ＦＵＣＫ",
    "ɟnɔʞ",
    "fück",
    "bîtch",
    "Beyoncé is performing tonight",
    "Beyonce\u0301 is performing tonight",  # decomposed accent splits the token
    "POKÉMON cards for sale",
    "Poke\u0301mon cards for sale",
    "José Mourinho gave a press conference",
    "JOSÉ MOURINHO",
    "ΕΤΗΤΗΣ",  # final sigma: lowercases to ετητης (a vocabulary term)
    "ΕΤΗΤΗΣ!",
    "ΕΤΗΤΗΣA",
    "ετητης",
    "ετητησ",
    "Σ",
    "ΑΣ ΣΑ ΑΣΑ Α.Σ",
    "μελ και βcommand",
    "ΜΕΛ ΚΑΙ ΒCOMMAND",
    "dαlus",
    "DΑLUS",
    "İstanbul is beautiful",
    "İDİOT",
    "IDIOT",
    "\u212aILL",  # Kelvin sign lowercases to ASCII k
    "\u212bngstr\u00f6m",
    "ﬁne ﬂuffy",  # ligatures are single \w scalars
    "連絡ください",
    "見学 迷惑 連絡",
    "竜龙 聖やや",
    "ውይይት",
    "這是一個測試",
    "これはテストです",
    "이것은 테스트입니다",
    "Это тест, идиот",
    "هذا اختبار",
    "זה מבחן",
    "यह एक परीक्षण है",
    "snunɐw",
    "zero\u200bwidth\u200bspace fuck\u200byou",
    "soft\u00adhyphen sh\u00adit",
    "non\u00a0breaking\u00a0space idiot",
    "tab\tseparated\tstupid",
    "line\nbreak\nbitch",
    "__TOC__ user_talk wikipedia_talk",
    "___ __ _",
    "0px 000 00 01 10th",
    "100046729",
    "1234567890",
    "3.14159 2.71828",
    "½ ¾ ² ³ ⅔ Ⅻ ⑩",
    "٣٤٥ ७८९",
    "x² y³",
    "http://example.com/fuck?q=shit&x=1",
    "someone@example.com",
    "#hashtag @mention $money",
    "C++ C# F#",
    "can't won't don't isn't",
    "the and of to a in",
    "the the the the the",
    "idiot idiot idiot idiot",
    "idiot " * 50,
    "thank you " * 30 + "fuck",
    "<b>stupid</b> <i>html</i>",
    "[[User talk:Example|talk]] ~~~~",
    "{{citation needed}}",
    "’curly quotes’ “idiot”",
    "dash—separated–words",
    "a\u0300b\u0301c",
    "\u00c5ngstr\u00f6m",
    "e\u0301e\u0301",
    "Ǆ ǅ ǆ",
    "ﬀ ﬃ",
    "ẞ straße STRASSE",
    "ǰ",
]

TEMPLATES = [
    "{a} {b}",
    "you {a} {b}",
    "{a}, {b}!",
    "{A} {B}",
    "this is {a} and {b}",
    "{a}... {b}?",
    "i think {a} is {b}",
]


def variants(rng: random.Random, benign: list, offensive: list, n: int) -> list:
    """Mixes of benign and offensive words in simple templates."""
    words_b = [w for s in benign for w in s.lower().split() if w.isalpha()]
    words_o = [w for s in offensive for w in s.lower().split() if w.isalpha()]
    out = []
    for i in range(n):
        a = rng.choice(words_b if i % 3 else words_o)
        b = rng.choice(words_o if i % 2 else words_b)
        t = rng.choice(TEMPLATES)
        out.append(t.format(a=a, b=b, A=a.upper(), B=b.title()))
    return out


def mutate(rng: random.Random, texts: list) -> list:
    out = []
    for text in texts:
        kind = rng.randrange(5)
        if kind == 0:
            out.append(text.upper())
        elif kind == 1:
            out.append(text.replace(" ", "  ").replace(".", " ... "))
        elif kind == 2:
            out.append(text + " " + rng.choice(["😂", "🙄", "!!!", "?!", "lol", "1234", "#wtf"]))
        elif kind == 3:
            out.append("".join(c.upper() if rng.random() < 0.5 else c for c in text))
        else:
            out.append(text.replace("a", "à").replace("e", "é"))
    return out


def main() -> None:
    rng = random.Random(20240605)
    texts = BENIGN + OFFENSIVE + EDGE
    texts += mutate(rng, BENIGN + OFFENSIVE)
    texts += variants(rng, BENIGN, OFFENSIVE, 60)
    seen = set()
    unique = []
    for t in texts:
        if t not in seen:
            seen.add(t)
            unique.append(t)
    probs = predict_prob(unique)
    labels = predict(unique)
    cases = [
        {"text": t, "prob": float(p), "label": int(label)}
        for t, p, label in zip(unique, probs, labels)
    ]
    mismatched = [c for c in cases if (c["prob"] > 0.5) != (c["label"] == 1)]
    if mismatched:
        print(f"note: predict disagrees with prob > 0.5 on {len(mismatched)} texts")
    out = {
        "generator": "Tests/Fixtures/safety/make_lexical_fixtures.py",
        "alt_profanity_check": metadata.version("alt-profanity-check"),
        "scikit_learn": sklearn.__version__,
        "python": platform.python_version(),
        "unicode_version": unicodedata.unidata_version,
        "cases": cases,
    }
    path = Path(__file__).with_name("lexical_cases.json")
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    flagged = sum(c["label"] for c in cases)
    print(f"wrote {path}: {len(cases)} cases, {flagged} flagged")


if __name__ == "__main__":
    main()
