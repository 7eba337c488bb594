"""Label rules shared by build_data.py and evaluate.py: OpenAI's 13 moderation categories, the
keyword rules that give fine categories to harmful texts whose source names none, and the trigger
words that make a benign text a "benign trigger text".

Rules never decide whether a text is harmful: that comes from its source (a red-team prompt set, a
human harm score, a Perspective score). They only say *which* categories a text known to be harmful
falls in, where the source does not say (HarmBench, AdvBench, JailbreakBench rephrasings,
Do-Not-Answer risk areas that span several categories) and add sub-categories
(…/threatening, …/intent, …/instructions, …/minors, …/graphic, illicit/violent).
"""
from __future__ import annotations

import re

CATEGORIES = [
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
]
PARENT = {
    "harassment/threatening": "harassment", "hate/threatening": "hate", "illicit/violent": "illicit",
    "self-harm/intent": "self-harm", "self-harm/instructions": "self-harm", "sexual/minors": "sexual",
    "violence/graphic": "violence",
}
TOP = ["hate", "harassment", "violence", "self-harm", "sexual", "illicit"]  # the done-when categories


def R(p: str) -> re.Pattern:
    return re.compile(p, re.I)


SELF = R(r"\b(suicid\w*|kill(ing)? (myself|yourself|themselves|himself|herself|oneself)|end(ing)? (my|your|their|his|her|one's) (own )?life|"
         r"take (my|your|their) own li(fe|ves)|self[- ]?harm\w*|hurt(ing)? (myself|yourself|themselves)|"
         r"cut(ting)? (myself|yourself|themselves|deeper)|hang(ing)? (myself|yourself|themselves)|overdos\w*|anorexi\w*|bulimi\w*|"
         r"starv(e|ing) (myself|yourself)|throw(ing)? up to lose|purg(e|ing) after|pro-?ana|self[- ]?injur\w*|"
         r"slit\w* (my |your )?wrists?|want to die|wish I (was|were) dead|don'?t want to (live|be alive|wake up)|"
         r"better off dead|no (reason|point) (to|in) liv\w*|end it all|blue whale challenge|femoral artery)\b")
FIRST_PERSON = R(r"\b(I|I'm|I've|I'll|I'd|me|my|myself)\b")
HOWTO = R(r"\b(how (to|do I|can I|would I|should I|could I|much|many)|ways? to|methods?|steps?|instructions?|guide|tutorial|"
          r"best way|easiest|fastest|quickest|painless\w*|most effective|lethal dose|where (to|on the body|should I)|"
          r"tips|techniques?|tricks?|what (pills|drugs|household)|which (pills|drugs|household|objects))\b")
SEXUAL = R(r"\b(sex|sexual\w*|sexy|porn\w*|erotic\w*|nude\w*|naked|orgasm\w*|orgy|orgies|genital\w*|penis|vagina\w*|"
           r"clitor\w*|fetish\w*|lewd|intercourse|masturbat\w*|blowjob\w*|horny|kinky|bdsm|bondage|threesome|"
           r"prostitut\w*|onlyfans|cum|dick|pussy|cock|boobs?|tits|xxx|stripper|seduc\w*|aroused|arousal|"
           r"explicit (story|scene|content|image|photo|material)s?|dirty joke\w*|sext\w*|hooker\w*|lingerie)\b")
MINORS = R(r"\b(child|children|kids?|minors?|underage|under-age|teens?|teenage\w*|preteen\w*|young (girl|boy)s?|"
           r"schoolgirl\w*|schoolboy\w*|1[0-7][- ]year[- ]old|[1-9][- ]year[- ]old|loli\w*|pedo\w*|paedo\w*|csam|grooming)\b")
HATE_TERM = R(r"\b(racis\w*|hate speech|hateful|slurs?|supremac\w*|antisemit\w*|islamophob\w*|xenophob\w*|homophob\w*|"
              r"transphob\w*|misogyn\w*|sexis\w*|discriminat\w*|inferior|dehumaniz\w*|ethnic cleansing|nazi\w*|"
              r"bigot\w*|stereotyp\w*|nigg\w*|fag\w*|kike\w*|chink\w*|tranny|trannies|wetback\w*|towelhead\w*|"
              r"untermensch|subhuman|holocaust denial|deny the holocaust|white power|master race)\b")
TARGET = R(r"\b(blacks?|black (people|men|women|person|folks|community)|whites|white (people|men|women)|jew\w*|muslim\w*|islam\w*|"
           r"christian\w*|hindu\w*|sikh\w*|arabs?|arabic|asians?|africans?|african americans?|mexicans?|latin[oax]s?|hispanics?|"
           r"immigrants?|refugees?|migrants?|foreigners?|gays?|lesbians?|homosexual\w*|transgender\w*|trans (people|women|men)|"
           r"queers?|lgbt\w*|bisexual\w*|women|females|disab\w*|cripples?|retard\w*|races?|racial\w*|ethnic\w*|minorit\w*|"
           r"religio\w*|chinese|indians?|roma|gypsy|gypsies|natives?|indigenous|aborigin\w*|jewish|atheists?|catholics?|"
           r"poor people|fat people|old people|elderly)\b")
NEG = R(r"\b(hate\w*|inferior|disgust\w*|lazy|stupid|dumb|criminals?|dirty|vermin|animals|cockroach\w*|rats|parasit\w*|"
        r"subhuman|should (be|go|not|all)|deserve\w*|blame\w*|exterminat\w*|get rid of|kill\w*|attack\w*|insult\w*|"
        r"mock\w*|jokes?|demean\w*|ridicul\w*|against|ban(ned)?|evil|threat\w*|destroy\w*|violen\w*|ruin\w*|"
        r"worthless|useless|savages?|terrorists?|plague|invasion|invaders?|deport\w*|go back|don'?t belong|superior|"
        r"propaganda|degenerat\w*|disease\w*|filth\w*|scum|trash|garbage|shoot|shot|lynch\w*|gas (them|the)|burn)\b")
HARASS = R(r"\b(harass\w*|bull(y|ies|ied|ying)|cyberbull\w*|insult\w*|humiliat\w*|stalk\w*|intimidat\w*|belittl\w*|"
           r"demean\w*|mock(ing|s)?|ridicul\w*|troll(ing)?|shaming|degrad\w*|defam\w*|slander\w*|libel\w*|doxx?\w*|"
           r"revenge porn|blackmail\w*|threat\w*|body[- ]?sham\w*|make fun of|derogatory|rumou?rs? about|"
           r"embarrass\w*|hate mail|swear at|curse at|idiot\w*|moron\w*|stupid|loser\w*|bitch\w*|asshole\w*|"
           r"retard\w*|ugly|pathetic|worthless|disgusting|fuck (you|off)|shut up|kill yourself|kys)\b")
THREAT = R(r"\b(threat\w*|i('ll| will| am going to|'m going to| gonna| want to) (kill|hurt|find|shoot|stab|beat|rape|murder|destroy|"
           r"end|break|burn|bury|slit|cut)|death threats?|you('ll| will| are going to|'re going to) (die|regret|pay|bleed|suffer)|"
           r"intimidat\w*|scare (someone|him|her|them|people|my)|blackmail\w*|extort\w*|watch your back|"
           r"(kill|hurt|shoot|stab|beat|rape|murder) (you|him|her|them)\b|make (him|her|them) suffer|"
           r"deserves? to (die|be (beaten|shot|killed|hurt))|should (all )?(be )?(shot|killed|hanged|hung|gassed|beaten|exterminated|die))\b")
VIOLENCE = R(r"\b(kill\w*|murder\w*|assassinat\w*|shoot\w*|shot|stab\w*|bomb\w*|explosi\w*|attack\w*|assault\w*|tortur\w*|"
             r"beat(ing)? (up|him|her|them|someone|to death)|beaten|punch\w*|strangl\w*|chok(e|ing) (him|her|someone|them)|"
             r"massacre\w*|slaughter\w*|behead\w*|decapitat\w*|dismember\w*|mutilat\w*|maim\w*|wound\w*|injur\w*|"
             r"hurt (someone|people|him|her|them|others|a person)|violen\w*|terroris\w*|genocide|lynch\w*|rap(e|ed|ing|ist)|"
             r"kidnap\w*|hostages?|shooting|guns?|gunman|gunmen|gunfire|knife|knives|weapons?|firearms?|blood\w*|gore|"
             r"corpses?|dead bod(y|ies)|riot\w*|arson|set fire|burn (down|alive)|poison\w*|lethal|fight\w*|brawl\w*|"
             r"knock (someone|him|her|them) out|incapacitat\w*|neutraliz\w*|subdu\w*|execut(e|ion) (him|her|them|people)|"
             r"hit (him|her|them)|break (his|her|their) (arm|leg|neck|bones?)|eyes? out|skin off|death match\w*)\b")
GRAPHIC = R(r"\b(gore|gory|gruesome|bloody|bloodied|blood (spurt\w*|pool\w*|splatter\w*|everywhere)|guts|entrails|intestines|"
            r"dismember\w*|mutilat\w*|decapitat\w*|behead\w*|severed|torn (flesh|apart)|flesh|skull|brains|eyes? out|gouge\w*|"
            r"peel\w* the skin|skin (off|alive)|skinned|disembowel\w*|graphic(ally)? (detail|description|violence)|"
            r"in (vivid|graphic|gory) detail|corpses?|autopsy|horrific (scene|detail)s?|bones? (crack|snap|shatter)\w*)\b")
WEAPON_VIOLENT = R(r"\b(bombs?|bomb-making|explosives?|detonat\w*|ieds?|pipe bombs?|grenades?|molotov\w*|napalm|thermite|"
                   r"weapons?|firearms?|guns?|rifles?|pistols?|ammunition|ammo|silencers?|suppressors?|ghost guns?|full[- ]auto\w*|"
                   r"automatic (rifle|weapon|fire)|bioweapons?|biological (weapon|warfare|agent)s?|chemical (weapon|warfare|agent)s?|"
                   r"nerve agents?|sarin|vx|ricin|anthrax|botulinum|toxins?|mustard gas|chlorine gas|dirty bombs?|"
                   r"nuclear (weapon|device|bomb)s?|enriched uranium|poison\w*|kill(ing|s|ed)?|murder\w*|assassinat\w*|"
                   r"hit ?man|terroris\w*|mass shooting|school shooting|kidnap\w*|human trafficking|sex trafficking|"
                   r"arson|set fire|tortur\w*|assault\w*|stab\w*|shoot\w*|dimethylmercury|lethal|armed robbery|"
                   r"hijack\w*|hostages?|tasers?|incapacitat\w*|knock (someone|him|her|them) out|hurt (someone|people|him|her|them)|"
                   r"rape|injur(e|ing) (someone|people)|pathogen\w*|virus(es)? (that|to) (kill|infect)|weaponi[sz]\w*)\b")
ILLICIT = R(r"\b(hack\w*|malware|ransomware|viruses|computer virus|trojans?|keyloggers?|botnets?|ddos|denial[- ]of[- ]service|"
            r"exploit\w*|sql injection|phish\w*|scam\w*|fraud\w*|steal\w*|stole|stolen|theft|shoplift\w*|rob|robb\w*|"
            r"burglar\w*|break into|launder\w*|counterfeit\w*|forg(e|ed|ery|ing)|fake (ids?|passports?|documents?|identit\w*|"
            r"currency|money|checks?|cheques?|prescriptions?|reviews?|invoices?)|identity theft|tax evasion|evade (taxes|tax|"
            r"police|law enforcement|detection|the police|customs)|insider trading|brib\w*|smuggl\w*|traffick\w*|drugs|"
            r"cocaine|heroin|meth|methamphetamine|fentanyl|mdma|lsd|opioids?|narcotics?|crack cocaine|illegal\w*|illicit\w*|"
            r"unlawful\w*|crimes?|criminal\w*|cheat\w*|pirat\w*|torrent\w*|bypass\w*|circumvent\w*|jailbreak\w*|"
            r"crack (a|the|someone's)? ?passwords?|spyware|stalkerware|surveil\w*|track (someone|my|his|her)|"
            r"without (their|his|her|the owner's) (consent|knowledge|permission)|extort\w*|blackmail\w*|poach\w*|ivory|"
            r"black market|dark ?web|darknet|credit card (numbers?|info|details|information)|skimm\w*|ponzi|"
            r"pyramid scheme|embezzl\w*|vandal\w*|trespass\w*|lock ?pick\w*|hotwir\w*|carjack\w*|synthesi[sz]\w*|precursors?|"
            r"get away with|without getting caught|undetected|untraceable|cover up|get high|counterfeit|pickpocket\w*|"
            r"shell company|offshore account|money mule|bootleg\w*|contraband|poison\w*|bombs?|explosives?|weapons?|"
            r"firearms?|guns?|arson|kidnap\w*|hit ?man|murder\w*|assassinat\w*|ransom|cartel|gang|unauthori[sz]ed access|"
            r"backdoor|rootkit|zero-day|privilege escalation|brute[- ]force|password|credentials?|evade|evasion|"
            r"disable (the )?(security|alarm|camera|gps|tracker)|fake (news|charity|website|login|account)s?|"
            r"plagiari[sz]\w*|copyright\w*|pirated)\b")
TRIGGER = [SELF, SEXUAL, HATE_TERM, TARGET, HARASS, THREAT, VIOLENCE, WEAPON_VIOLENT, ILLICIT, GRAPHIC]


def has_trigger(text: str) -> bool:
    return any(p.search(text) for p in TRIGGER)


def close(cats) -> list[str]:
    """Adds each sub-category's parent and returns the categories in canonical order."""
    s = set(cats)
    for c in list(s):
        if c in PARENT:
            s.add(PARENT[c])
    return [c for c in CATEGORIES if c in s]


def is_hate(text: str) -> bool:
    return bool(HATE_TERM.search(text) or (TARGET.search(text) and NEG.search(text)))


def rule_categories(text: str) -> list[str]:
    """Categories of a text known to be harmful whose source names none (a red-team request or an
    unsafe answer). May be empty: the text is then outside the 13-category taxonomy (e.g. misinformation,
    privacy, spam) and is left out of the data."""
    cats = set()
    if SELF.search(text):
        cats.add("self-harm")
        if FIRST_PERSON.search(text):
            cats.add("self-harm/intent")
        if HOWTO.search(text):
            cats.add("self-harm/instructions")
        text = SELF.sub(" ", text)  # "kill myself" is not violence against others
    if SEXUAL.search(text):
        cats.add("sexual")
        if MINORS.search(text):
            cats.add("sexual/minors")
    hate = is_hate(text)
    if hate:
        cats.add("hate")
    if HARASS.search(text):
        cats.add("harassment")
    if THREAT.search(text):
        cats.add("harassment/threatening")
        if hate:
            cats.add("hate/threatening")
    if VIOLENCE.search(text):
        cats.add("violence")
        if GRAPHIC.search(text):
            cats.add("violence/graphic")
        if hate and R(r"\b(kill\w*|exterminat\w*|shoot\w*|shot|gas(sed)?|lynch\w*|attack\w*|violen\w*|bomb\w*|burn\w*|hang\w*|murder\w*|beat\w*|genocide)\b").search(text):
            cats.add("hate/threatening")
    if WEAPON_VIOLENT.search(text):
        cats.add("illicit/violent")
    if ILLICIT.search(text):
        cats.add("illicit")
    return close(cats)


def refine(text: str, cats, request: str = "") -> list[str]:
    """Adds sub-categories to a text whose source gives its main categories; `request` is the prompt
    that a response answers (for intent and instructions)."""
    s = set(cats)
    both = request + "\n" + text
    if "self-harm" in s:
        if FIRST_PERSON.search(request or text) and SELF.search(request or text):
            s.add("self-harm/intent")
        if HOWTO.search(request or text):
            s.add("self-harm/instructions")
    if "sexual" in s and MINORS.search(both) and SEXUAL.search(both):
        s.add("sexual/minors")
    if "violence" in s:
        if GRAPHIC.search(text):
            s.add("violence/graphic")
        if HOWTO.search(request or text) and WEAPON_VIOLENT.search(both):
            s.add("illicit/violent")
        if THREAT.search(text):
            s.add("harassment/threatening")
    if "hate" in s and (THREAT.search(text) or R(r"\b(kill\w*|exterminat\w*|shoot\w*|gas(sed)?|lynch\w*|violence against|attack\w*|genocide|punch\w*|beat\w*)\b").search(text)):
        s.add("hate/threatening")
    if "harassment" in s and THREAT.search(text):
        s.add("harassment/threatening")
    if "illicit" in s and WEAPON_VIOLENT.search(both):
        s.add("illicit/violent")
    return close(s)
