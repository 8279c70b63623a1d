"""Generates ``bench/eval/dialogue_set.json``: the second retrieval set (deterministic),
deliberately unlike ``retrieval_set.json``.

    python -m bench.eval.make_dialogue_set     # rewrites the JSON file (same content every time)

Each collection is a multi-session conversation between two people, turned into per-speaker
observations, each stored as one fact the way a client of ``POST /v1/profile/facts`` does it:
key ``obs_<n>`` (a fact's key is unique in its profile, so it can't be the speaker), value
``"<Speaker>: <observation>"`` with the session's date in the observation ("On 8 May 2023,
..."). So both names are in a large share of every scope's facts, and the questions name one
speaker, or both. Every speaker lives through a few storylines (``dialogue_threads.py``: a new
job, a dog, a race...) over the sessions, the other speaker reacts to some of it (same topic,
not the answer), and both make small talk (``dialogue_chat.py``). Question types:
``temporal`` ("When did ...?"), ``single``, ``paraphrase`` (no content word shared with the
answer but the names: checked here), ``other`` (names the other speaker too), ``both`` ("what
do A and B both ...", one fact of each), ``multi`` (every event of a storyline, 2-3 facts).

The last ``HOLDOUT`` conversations are marked ``holdout``: ``bench.eval_retrieval`` leaves them
out unless asked (``--holdout``), so settings are not chosen on them.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path
from typing import Any

from bench.eval.dialogue_chat import CHAT, THINGS
from bench.eval.dialogue_threads import BOTH, THREADS
from bench.eval.make_set import write

OUT = Path(__file__).resolve().parent / "dialogue_set.json"
SEED = 20261205
CONVERSATIONS = 8
HOLDOUT = 2

# (name, she, her (possessive), her (object))
PEOPLE = [("Caroline", "she", "her", "her"), ("Melanie", "she", "her", "her"),
          ("Jon", "he", "his", "him"), ("Gina", "she", "her", "her"),
          ("John", "he", "his", "him"), ("Maria", "she", "her", "her"),
          ("Tim", "he", "his", "him"), ("Audrey", "she", "her", "her"),
          ("Andrew", "he", "his", "him"), ("Deborah", "she", "her", "her"),
          ("Evan", "he", "his", "him"), ("Sam", "he", "his", "him"),
          ("Nate", "he", "his", "him"), ("Joanna", "she", "her", "her"),
          ("Calvin", "he", "his", "him"), ("Dave", "he", "his", "him")]  # fmt: skip
SLOTS: dict[str, list[str]] = {
    "color": ["turquoise", "deep blue", "speckled white", "rust orange", "sage green"],
    "city": ["Portland", "Lisbon", "Denver", "Glasgow", "Austin", "Valencia", "Seattle"],
    "city2": ["Chicago", "Boston", "Montreal", "Prague", "Dublin", "Kyoto", "Melbourne"],
    "city3": ["Savannah", "Bruges", "Quebec City", "Santa Fe", "Edinburgh", "Porto"],
    "country": ["Sweden", "Brazil", "Ireland", "Vietnam", "Greece", "Mexico", "Kenya", "Japan"],
    "mountain": ["Mount Rainier", "Ben Nevis", "Mount Hood", "the Half Dome", "Pikes Peak"],
    "park": ["Yosemite", "Big Sur", "the Lake District", "Acadia", "Zion", "Banff"],
    "friend": ["Tessa", "Marcus", "Priya", "Leo", "Hannah", "Diego", "Yuki", "Omar"],
    "petname": ["Oscar", "Max", "Bailey", "Ziggy", "Buddy", "Rufus", "Toby"],
    "petname2": ["Luna", "Mittens", "Cleo", "Pepper", "Oreo", "Nala"],
    "breed": ["labrador", "beagle", "terrier", "shepherd", "poodle"],
    "book": [
        "Charlotte's Web",
        "Becoming",
        "The Night Circus",
        "Educated",
        "Where the Crawdads Sing",
        "The Alchemist",
    ],
    "book2": ["Anna Karenina", "Dune", "Little Women", "The Midnight Library", "Pachinko", "Circe"],
    "instrument": ["acoustic guitar", "violin", "ukulele", "keyboard", "clarinet"],
    "band": ["Coldplay", "Taylor Swift", "Imagine Dragons", "Fleetwood Mac", "Arctic Monkeys"],
    "company": ["Brightline Media", "Northgate Bank", "Copperleaf Retail", "Helix Pharma"],
    "company2": [
        "a renewable-energy startup",
        "the city hospital",
        "a design agency",
        "a logistics firm",
    ],
    "job": ["project manager", "graphic designer", "data analyst", "nurse", "sales lead"],
    "amount": ["400", "650", "1,200", "900"],
    "partner": ["Ryan", "Sophie", "Michael", "Elena", "Chris", "Nadia"],
    "dish": ["lasagna", "pad thai", "paella", "ramen", "dumplings", "curry"],
    "sport": ["basketball", "tennis", "soccer", "volleyball", "badminton"],
    "car": ["Honda Civic", "Subaru Outback", "Ford Focus", "Toyota Prius", "Mazda 3"],
    "game": ["Zelda", "Fortnite", "Stardew Valley", "Minecraft", "Counter-Strike", "chess online"],
    "kid": ["Lily", "Noah", "Emma", "Jack", "Ava"],
    "kid2": ["Milo", "Zoe", "Ben", "Ruby", "Sam Jr."],
    "sibling": ["Daniel", "Rosa", "Kevin", "Amira", "Paul"],
}
DATE_FORMATS = ["On {d}, {o}", "({d}) {o}", "{o} (said on {d})"]


def _fill(text: str, slots: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: slots.get(m.group(1), m.group(0)), text)


def _stems(text: str, names: set[str]) -> set[str]:
    """Crude word roots (first 5 letters), names left out: checks a paraphrase shares none."""
    from proxy.services.query_terms import query_terms

    return {w[:5] for w in query_terms(text) if w not in names}


def _persona(rng: random.Random, me: tuple[str, ...], other: tuple[str, ...]) -> dict[str, str]:
    slots = {k: rng.choice(v) for k, v in SLOTS.items()}
    slots |= {"S": me[0], "she": me[1], "her": me[2], "hers_obj": me[3]}
    slots |= {"O": other[0], "she_o": other[1], "her_o": other[2]}
    return slots


def _threads(rng: random.Random, shared: list[str], n: int) -> list[dict[str, Any]]:
    """``n`` storylines, one of each ``shared`` category among them."""
    chosen = [rng.choice([t for t in THREADS if t["category"] == c]) for c in shared]
    rest = [t for t in THREADS if t not in chosen]
    return chosen + rng.sample(rest, n - len(chosen))


def conversation(rng: random.Random, conv: str, pair: list[tuple[str, ...]]) -> dict[str, Any]:
    sessions = rng.randint(18, 32)
    chat_rate = rng.uniform(3.0, 8.0)
    day = dt.date(2022, 1, 1) + dt.timedelta(days=rng.randint(0, 500))
    dates = []
    for _ in range(sessions):
        day += dt.timedelta(days=rng.randint(3, 24))
        dates.append(f"{day.day} {day:%B %Y}")
    fmt = rng.choice(DATE_FORMATS)
    cats = sorted({str(t["category"]) for t in THREADS if t["category"]})
    shared = rng.sample(cats, 3)
    personas = [_persona(rng, pair[0], pair[1]), _persona(rng, pair[1], pair[0])]
    # what is said in each session: (speaker, observation, answers-for or None, whose
    # storyline it tells: its placeholders are filled from that speaker's persona)
    said: list[list[tuple[int, str, Any, int]]] = [[] for _ in range(sessions)]
    plan: list[tuple[int, dict[str, Any]]] = []
    for who in (0, 1):
        for thread in _threads(rng, shared, rng.randint(10, 14)):
            plan.append((who, thread))
            at = sorted(rng.sample(range(sessions), len(thread["events"])))
            for s, event in zip(at, thread["events"], strict=True):
                said[s].append((who, rng.choice(event["obs"]), (who, id(thread), id(event)), who))
                if event["react"] and rng.random() < 0.7:  # the other one answers ({O})
                    said[s].append((1 - who, rng.choice(event["react"]), None, who))
    facts: list[dict[str, str]] = []
    where: dict[tuple[int, int, int], str] = {}  # (speaker, thread, event) -> fact id
    decks: list[list[str]] = [[], []]  # small talk: each line once per speaker, then again
    for s in range(sessions):
        lines = list(said[s])
        for who in (0, 1):
            for _ in range(max(1, round(rng.gauss(chat_rate, 1.5)))):
                if not decks[who]:
                    decks[who] = rng.sample(CHAT, len(CHAT))
                line = decks[who].pop().replace("{x}", rng.choice(THINGS))
                lines.append((who, line, None, who))
        rng.shuffle(lines)
        for who, line, answers, about in lines:
            text = _fill(line, personas[about])
            text = fmt.format(d=dates[s], o=text[0].upper() + text[1:])
            fid = f"{conv}_obs_{len(facts) + 1}"
            facts.append(
                {"id": fid, "key": f"obs_{len(facts) + 1}", "value": f"{pair[who][0]}: {text}"}
            )
            if answers is not None:
                where[answers] = fid
    questions: list[dict[str, Any]] = []

    def ask(qtype: str, text: str, relevant: list[str]) -> None:
        questions.append({"user": conv, "question": text, "relevant": relevant, "type": qtype})

    first: dict[tuple[int, str], str] = {}
    for who, thread in plan:
        slots = personas[who]
        ids = [where[(who, id(thread), id(e))] for e in thread["events"]]
        if thread["category"] in shared:
            first[(who, thread["category"])] = ids[0]
        for event, fid in zip(thread["events"], ids, strict=True):
            for qtype, q in event["q"]:
                ask(qtype, _fill(q, slots), [fid])
        for qtype, q in thread["multi"]:
            ask(qtype, _fill(q, slots), ids)
    for cat in shared:
        a, b = (0, 1) if rng.random() < 0.5 else (1, 0)
        for q in BOTH[cat]:
            text = q.format(A=pair[a][0], B=pair[b][0])
            ask("both", text, [first[(0, cat)], first[(1, cat)]])
    texts = {f["id"]: f"{f['key'].replace('_', ' ')}: {f['value']}" for f in facts}
    names = {pair[0][0].lower(), pair[1][0].lower()}
    for q in questions:
        if q["type"] == "paraphrase":
            answer = set().union(*(_stems(texts[r], names) for r in q["relevant"]))
            if _stems(q["question"], names) & answer:
                q["type"] = "single"
    return {"user": conv, "speakers": [p[0] for p in pair], "facts": facts, "questions": questions}


def build(seed: int = SEED) -> dict[str, Any]:
    rng = random.Random(seed)
    people = rng.sample(PEOPLE, 2 * CONVERSATIONS)
    users, questions = [], []
    for c in range(CONVERSATIONS):
        conv = conversation(rng, f"conv_{c + 1}", people[2 * c : 2 * c + 2])
        questions.extend(conv.pop("questions"))
        users.append(conv | {"holdout": c >= CONVERSATIONS - HOLDOUT})
    return {"seed": seed, "users": users, "questions": questions}


def main() -> None:
    data = build()
    types = write(OUT, data)
    sizes = [len(u["facts"]) for u in data["users"]]
    print(f"{OUT}: {len(sizes)} conversations ({HOLDOUT} hold-out), facts {sizes}")
    print(
        f"  {len(data['questions'])} questions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(types.items()))
    )


if __name__ == "__main__":
    main()
