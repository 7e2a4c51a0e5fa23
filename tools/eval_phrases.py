"""The noun phrases of a prompt, as T2I-CompBench takes them for its BLIP-VQA questions.

T2I-CompBench asks one question per spaCy noun chunk (`en_core_web_sm`). spaCy's English
model is not on PyPI, so `noun_phrases` uses spaCy when that model is installed, and
otherwise `split_noun_phrases`, a small rule-based splitter written for the shapes of
T2I-CompBench's attribute prompts: "a green bench and a blue bowl", "rubber gloves and a
glass cup", "a bathroom with green tile and a red shower curtain", "a black and white cat".
On those it gives spaCy's chunks; on long free-form sentences it stays close, as spaCy's
own parses of them vary.
"""

import functools
import re

# A determiner, possessive or number starts a new phrase ("a", "the", "its", "two").
DETERMINERS = frozenset("""
    a an the its his her their our my your this these those some each every another any no
    one two three four five six seven eight nine ten several many few
""".split())

# Words that end a phrase and belong to none.
PREPOSITIONS = frozenset("""
    with on in of by at for from to near under over between beside besides behind through into onto
    against above below across along around among amongst inside outside beneath underneath upon
    within without atop like during toward towards after before past via off up down out next
    beyond alongside opposite
""".split())
CONJUNCTIONS = frozenset("and or but nor while as so then than because although though if when where whereas".split())
AUXILIARIES = frozenset("""
    is are was were be been being am has have had having do does did can could will would shall
    should may might must not n't 's 're
""".split())
ADVERBS = frozenset("""
    nearby together there here away empty very too also just still even almost quite really both most
    side-by-side perfectly gently softly brightly slowly quietly happily peacefully proudly
""".split())
# Pronouns are noun chunks of their own in spaCy ("which", "it").
PRONOUNS = frozenset("it they them he she him we us i you which who whom".split())

# Attribute adjectives of T2I-CompBench's categories and their kin: an "and" between two
# of them joins modifiers of one noun ("a black and white cat"), not two phrases.
ADJECTIVES = frozenset("""
    red orange yellow green blue purple pink brown black white gray grey silver gold golden beige tan
    violet magenta cyan turquoise maroon navy teal ivory cream crimson scarlet whitish dark light pale
    bright high low
    round square rectangular circular oval triangular cubic spherical cylindrical conical pyramidal
    oblong teardrop pentagonal hexagonal octagonal diamond heart-shaped star-shaped
    big small large tiny little huge tall short long narrow wide thin thick flat curved
    wooden metallic metal fluffy plastic glass leather rubber fabric furry smooth rough soft hard
    shiny glossy matte clean dirty old new striped checkered spotted
""".split())

# Verbs, as bases; their -s, -ed and -ing forms and the irregular pasts below are verbs too.
VERB_BASES = """
    sit lie hold read shine provide arrange create illuminate mix hang jot park fill lean float boil
    stir attract
    eat drink wear carry contain reflect surround decorate sleep grow perch chase ride swim complement
    accompany adorn add make keep give serve take sing glow sparkle protect support catch throw wait
    stay draw write shelter bloom blend overlook offer bring cuddle pour hide peek sway wrap fit help
    seem appear become get go come move use need want like love enjoy see hear lead follow meet build
    buy put spread sprinkle scatter sip listen gaze stare rise fall drift glide hover sail bounce
    clutch loom nestle sprawl stretch reach highlight brighten accent complete enhance evoke capture
    depict lend twinkle shimmer flutter rustle crawl climb jump leap hop graze munch nibble bask
    lounge relax nap snuggle sit stand lay
    """.split()
# Words that are nouns as often as verbs ("a picture frame", "a cake stand", "a traffic light"):
# in their base and -s forms they are verbs only before an object or a particle.
NOUN_VERB_BASES = """
    rest display cover play show line watch match dance light paint open close store contrast frame
    face hug guard block touch cook bake cut roll tie sound smell taste feel look set stack pile
    flow swing grip tower point beam curl coil wind run walk fly park fit place feature flash
    release measure pound beat
    """.split()
IRREGULAR_VERBS = frozenset("""
    sat stood lay lain held shone shined hung made kept gave given took taken sang sung ran ate eaten
    drank drunk wore worn caught threw thrown drew drawn wrote written grew grown slept fed led met
    brought built bought lit cast cut put set spread went gone came seen saw felt got gotten flew
    flown swam swum rode ridden rose risen fell fallen hid hidden sent sold told found left
""".split())


def _s_form(base: str) -> str:
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        return base + "es"
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        return base[:-1] + "ies"
    return base + "s"


def _verb_forms(base: str) -> set:
    stem = base[:-1] if base.endswith("e") else base
    forms = {base, _s_form(base), stem + "ing"}
    forms.add(base[:-1] + "ied" if base.endswith("y") and base[-2:-1] not in "aeiou" else stem + "ed")
    if len(base) >= 3 and base[-1] not in "aeiouwxy" and base[-2] in "aeiou" and base[-3] not in "aeiou":
        forms.update({base + base[-1] + "ed", base + base[-1] + "ing"})  # "jotted", "sitting"
    return forms


VERBS = frozenset(set().union(*(_verb_forms(b) for b in VERB_BASES + NOUN_VERB_BASES)) | IRREGULAR_VERBS)
NOUN_VERBS = frozenset(set(NOUN_VERB_BASES) | {_s_form(b) for b in NOUN_VERB_BASES})
PARTICLES = frozenset("down up out off away".split())
NOT_ADVERBS = frozenset("butterfly dragonfly firefly family jelly belly holly lily bully assembly".split())

TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


def split_noun_phrases(prompt: str) -> list:
    """Noun phrases of an English prompt by rule, close to spaCy's noun chunks (see the module doc)."""
    tokens = [(m.group(), m.start(), m.end()) for m in TOKEN.finditer(prompt)]
    words = [t[0].lower() for t in tokens]
    phrases = []
    chunk = []  # indices into tokens

    def close():
        # A chunk needs a head noun: a word that is no determiner or adjective, or an adjective
        # after a determiner ("a red orange", "a diamond"). A bare adjective is none ("whitish").
        content = [words[i] for i in chunk if words[i] not in DETERMINERS and words[i][0].isalpha()]
        if content and (any(w not in ADJECTIVES for w in content) or words[chunk[0]] in DETERMINERS):
            while words[chunk[-1]] == ",":
                chunk.pop()
            phrases.append(prompt[tokens[chunk[0]][1]:tokens[chunk[-1]][2]])
        chunk.clear()

    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word in DETERMINERS:
            # "the other" and the like: a determiner after a determiner stays ("its two doors").
            if chunk and prev not in DETERMINERS:
                close()
            chunk.append(i)
        elif word in ("and", ",") and chunk and prev in ADJECTIVES and nxt in ADJECTIVES:
            chunk.append(i)  # "black and white", "long, narrow": two modifiers of one noun
        elif word in PRONOUNS or (word == "that" and chunk):  # "the shapes that he ..."
            close()
            phrases.append(tokens[i][0])
        elif word == "can" and chunk and (prev in DETERMINERS or prev in ADJECTIVES or prev.endswith("ing")):
            chunk.append(i)  # "a cylindrical can", "a watering can"
        elif (word in PREPOSITIONS or word in CONJUNCTIONS or word in AUXILIARIES
              or (_is_adverb(word) and not (chunk and (prev in DETERMINERS or prev in ADJECTIVES)))
              or not word[0].isalnum()):
            close()
        elif (word in VERBS or word.endswith(("ed", "ing"))) and _is_verb_here(words, i, chunk):
            close()
        else:
            chunk.append(i)
    if chunk:
        close()
    return phrases


def _is_function_word(word: str) -> bool:
    return (word in DETERMINERS or word in ADJECTIVES or word in PREPOSITIONS or word in CONJUNCTIONS
            or word in AUXILIARIES or word in ADVERBS or word in PRONOUNS or word in PARTICLES
            or not word[0].isalnum())


def _is_verb_here(words: list, i: int, chunk: list) -> bool:
    """Whether the word at i, a verb form or a word in -ed or -ing, ends a noun phrase as a verb.

    After a modifier it is part of the noun ("a cutting board", "blue sloped ceiling"). A word
    that is a noun as often as a verb is a verb after a noun only before an object, and at the
    start of a phrase only after an auxiliary or a pronoun ("can hold"). An -ing word, or an
    -ed word not known as a verb, before a noun modifies it ("the cozy reading nook", "a snow
    covered street").
    """
    word = words[i]
    prev = words[i - 1] if i else ""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if chunk and (words[chunk[-1]] in DETERMINERS or words[chunk[-1]] in ADJECTIVES):
        return False
    if word in NOUN_VERBS:
        if not chunk:
            return prev in AUXILIARIES or prev in PRONOUNS
        return nxt in DETERMINERS or nxt in ADJECTIVES or nxt in PARTICLES or nxt in PRONOUNS
    if prev in AUXILIARIES:
        return True  # "were attached", "are sitting"
    modifies_next = bool(nxt) and not _is_function_word(nxt)
    if word.endswith("ing"):
        return not modifies_next
    if word in VERBS:
        return True
    # An unknown -ed word after a noun: a verb ("hikers hydrated on").
    return (not modifies_next and len(word) > 4 and not word.endswith(("eed", "bed", "shed", "sled"))
            and (bool(chunk) or prev in PRONOUNS or prev == "that"))


def _is_adverb(word: str) -> bool:
    return word in ADVERBS or (word.endswith("ly") and len(word) > 5 and word not in NOT_ADVERBS)


@functools.lru_cache(maxsize=1)
def _spacy_pipeline():
    """spaCy's en_core_web_sm when it is installed, else None."""
    try:
        import spacy
        return spacy.load("en_core_web_sm")
    except Exception:  # spaCy absent, or present without the English model
        return None


def noun_phrases(prompt: str) -> list:
    """The prompt's noun phrases: spaCy's noun chunks when en_core_web_sm is installed, else the splitter's."""
    nlp = _spacy_pipeline()
    if nlp is not None:
        return [chunk.text for chunk in nlp(prompt).noun_chunks]
    return split_noun_phrases(prompt)


def phrase_source() -> str:
    """Which of the two gives the phrases here, for the report."""
    return "spaCy en_core_web_sm noun chunks" if _spacy_pipeline() is not None else "the pack's rule-based splitter"


# T2I-CompBench's spatial vocabulary, in the order its UniDet evaluation looks for them.
SPATIAL_RELATIONS = ("on side of", "next to", "near", "on the left of", "on the right of",
                     "on the bottom of", "on the top of", "on top of")


def spatial_relation(prompt: str):
    """(object A, relation, object B) of a spatial prompt such as "a dog on the left of a chair", or None.

    The relation is the first of SPATIAL_RELATIONS in the prompt, as T2I-CompBench finds it
    (matched as whole words here, so "linear" holds no "near"). The objects are the noun
    phrases on either side of it without their determiner: the names a zero-shot detector is
    asked for ("dog", "teddy bear"). T2I-CompBench takes the first and last noun token,
    because UniDet knows a closed list of single-word labels.
    """
    for relation in SPATIAL_RELATIONS:
        match = re.search(r"\b" + relation.replace(" ", r"\s+") + r"\b", prompt, flags=re.IGNORECASE)
        if match:
            before = split_noun_phrases(prompt[:match.start()])
            after = split_noun_phrases(prompt[match.end():])
            if not before or not after:
                return None
            return _object_name(before[-1]), relation, _object_name(after[0])
    return None


def _object_name(phrase: str) -> str:
    words = phrase.split()
    while len(words) > 1 and words[0].lower() in DETERMINERS:
        words.pop(0)
    return " ".join(words)
