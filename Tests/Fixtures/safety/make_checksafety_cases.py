#!/usr/bin/env python3
"""Writes checksafety_cases.json: benign and offending texts with the flags alignd must give.

Run with the venv that scripts/fetch-safety-model.sh creates (pinned alt-profanity-check):

    ${ALIGND_CACHE_DIR:-.build-cache}/venv-safety/bin/python \
        Tests/Fixtures/safety/make_checksafety_cases.py

Each case lists `rules`: the rule categories (PII patterns, term lists of policy-with-terms.json)
the text contains, written by hand from the documented patterns in Docs/SAFETY.md. The lexical
expectation is not written by hand: `lexical_prob` and `lexical_label` are alt-profanity-check's
own `predict_prob` and `predict`, and a text is expected to be flagged `harassment` exactly when
`predict` says 1. `expected_flagged` is the union, as the default profile of
policy-with-terms.json flags it; `expected_action` follows from that profile's actions.
"""

import json
from importlib import metadata
from pathlib import Path

from profanity_check import predict, predict_prob

# (text, rule categories present)
CASES = [
    # Benign
    ("Thanks for the quick reply, that fixed my problem.", []),
    ("Could you please send me the invoice for last month?", []),
    ("The meeting is on 2024-01-15 at 10:30 in room 4.", []),
    ("Version 1.2.3 was released; see section 4.5.6 of the manual.", []),
    ("The ISBN is 978-3-16-148410-0 and it costs $1,299.99.", []),
    ("Our router is at 192.168.1.1 and the build number is 100046729.", []),
    ("Call me later, my extension is 555-1234.", []),
    ("Kill the process with Ctrl+C if it hangs.", []),
    ("The dam burst after days of heavy rain.", []),
    ("Scunthorpe United won the match 2-1.", []),
    ("Reach the team via the contact form, not at example dot com.", []),
    ("Write to me at user@localhost or @support on the forum.", []),
    ("The card 4111 1111 1111 1112 fails its checksum.", []),
    ("The SSN 000-12-3456 and 666-12-3456 are never issued.", []),
    ("Serial numbers look like 123-45-678 or 12-345-6789.", []),
    ("Globexpress and Acme Corporation are not on the list.", []),
    ("Bluebirds sing in the morning.", []),
    ("I prefer C and C# to most other languages.", []),
    # PII
    ("Contact me at jane.doe+news@example.co.uk for details.", ["pii/email"]),
    ("Email FIRST.LAST@Sub.Example.ORG today.", ["pii/email"]),
    ("Call (415) 555-2671 after lunch.", ["pii/phone"]),
    ("My cell is 415-555-2671, home is 415.555.0199.", ["pii/phone"]),
    ("Dial +1 (212) 555-0123 or +1 212 555 0123.", ["pii/phone"]),
    ("Our London office: +44 20 7946 0958.", ["pii/phone"]),
    ("In Germany call +49 30 12345678.", ["pii/phone"]),
    ("Ring 020 7946 0958 from inside the UK.", ["pii/phone"]),
    ("Mon numéro est 06 12 34 56 78.", ["pii/phone"]),
    ("Pay with 4111 1111 1111 1111 please.", ["pii/credit_card"]),
    ("Card: 5500-0000-0000-0004, exp 12/27.", ["pii/credit_card"]),
    ("Amex 3782 822463 10005 on file.", ["pii/credit_card"]),
    ("Number 4012888888881881 was charged.", ["pii/credit_card"]),
    ("My SSN is 123-45-6789.", ["pii/national_id"]),
    ("SSN 078 05 1120 appeared on a wallet card.", ["pii/national_id"]),
    ("NI number: JG 10 37 26 A.", ["pii/national_id"]),
    ("National insurance AB123456C is mine.", ["pii/national_id"]),
    ("DNI 12345678Z, por favor.", ["pii/national_id"]),
    ("Write to bob@example.com or call 415-555-2671.", ["pii/email", "pii/phone"]),
    # Term lists (policy-with-terms.json)
    ("We are switching to Globex next quarter.", ["terms/competitors"]),
    ("Is ACME   corp hiring?", ["terms/competitors"]),
    ("INITECH, again.", ["terms/competitors"]),
    ("The Bluebird launch slipped.", ["terms/project-codenames"]),
    ("Status of Operation Nightjar?", ["terms/project-codenames"]),
    ("Rewrite it in C++ please.", ["terms/project-codenames"]),
    ("Globex leaked the bluebird plan.", ["terms/competitors", "terms/project-codenames"]),
    # Offensive (the lexical classifier's call decides the harassment flag)
    ("You are a fucking idiot.", []),
    ("Shut up, you stupid bitch.", []),
    ("Go to hell, asshole.", []),
    ("What a bunch of idiots running this site.", []),
    ("You're such a pathetic loser.", []),
    ("I hate waiting in line at the post office.", []),
    ("This movie was boring and far too long.", []),
    ("Fuck off, and email me at troll@example.com if you disagree.", ["pii/email"]),
    ("Globex is run by morons.", ["terms/competitors"]),
    ("Holy shit, that was amazing!", []),
]

ACTIONS = {
    "harassment": "flag", "pii/email": "flag", "pii/phone": "flag",
    "pii/credit_card": "block", "pii/national_id": "block",
    "terms/competitors": "flag", "terms/project-codenames": "block",
}
RANK = {"allow": 0, "flag": 1, "block": 2}


def main() -> None:
    texts = [t for t, _ in CASES]
    probs = predict_prob(texts)
    labels = predict(texts)
    cases = []
    for (text, rules), p, label in zip(CASES, probs, labels):
        assert (p > 0.5) == (label == 1), text
        flagged = sorted(set(rules) | ({"harassment"} if label == 1 else set()))
        action = "allow"
        for c in flagged:
            if RANK[ACTIONS[c]] > RANK[action]:
                action = ACTIONS[c]
        cases.append({
            "text": text, "rules": sorted(rules), "lexical_prob": float(p), "lexical_label": int(label),
            "expected_flagged": flagged, "expected_action": action,
        })
    out = {
        "generator": "Tests/Fixtures/safety/make_checksafety_cases.py",
        "policy": "policy-with-terms.json",
        "profile": "default",
        "alt_profanity_check": metadata.version("alt-profanity-check"),
        "cases": cases,
    }
    path = Path(__file__).with_name("checksafety_cases.json")
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}: {len(cases)} cases, {sum(c['lexical_label'] for c in cases)} lexically offensive, "
          f"{sum(1 for c in cases if c['expected_flagged'])} flagged")


if __name__ == "__main__":
    main()
