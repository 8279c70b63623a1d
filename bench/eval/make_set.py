# ruff: noqa: E501  (the templates are data: one fact and its questions per line)
"""Generates ``bench/eval/retrieval_set.json``: the retrieval evaluation set (deterministic).

    python -m bench.eval.make_set        # rewrites the JSON file (same content every time)

Each end user gets a memory of the kind extraction writes (``key: value`` facts about
preferences, plans, people, dates, places, work, health, things owned), many of them starting
with the user's own name as extracted facts often do, plus filler facts of everyday chat.
Each question names the facts that answer it and has a type:

- ``keyword``: shares a rare word with its answer (a person, place, product, brand);
- ``paraphrase``: shares no word with its answer, stopwords aside (checked below);
- ``name``: mostly the user's own name, with one topical word;
- ``multi``: several facts answer it (e.g. all of the user's family).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "retrieval_set.json"
SEED = 20261201

NAMES = ["Priya", "Marco", "Aiko", "Tomasz", "Fatima", "Lucas", "Ingrid", "Kwame", "Sofia"]
CITIES = ["Lisbon", "Osaka", "Denver", "Kraków", "Nairobi", "Montréal", "Valencia", "Edinburgh",
          "Austin", "Porto", "Tallinn", "Hanoi"]  # fmt: skip
TRIPS = ["Iceland", "Patagonia", "Kyoto", "Sicily", "Morocco", "the Dolomites", "Vietnam",
         "Norway's fjords", "Bali", "Peru"]  # fmt: skip
PEOPLE = ["Ana", "Jonas", "Mei", "Rafael", "Leila", "Otto", "Chiara", "Samir", "Noor", "Elena",
          "Bruno", "Hana", "Diego", "Yusuf", "Greta", "Ravi"]  # fmt: skip
PETS = ["Biscuit", "Mochi", "Pepper", "Luna", "Rocket", "Tofu", "Ziggy", "Olive"]
COMPANIES = ["Northwind Labs", "Bluefin Health", "Acme Logistics", "Stellar Bank",
             "Orbital Games", "Greenleaf Foods", "Kestrel Robotics", "Harbor Insurance"]  # fmt: skip
ROLES = ["an ICU nurse", "a data engineer", "a high school chemistry teacher", "an architect",
         "a product designer", "a backend developer", "an accountant", "a physiotherapist"]  # fmt: skip
CUISINES = ["Ethiopian", "Sichuan", "Peruvian", "Lebanese", "Neapolitan pizza", "Oaxacan",
            "Georgian", "Korean barbecue"]  # fmt: skip
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]  # fmt: skip
GADGETS = ["Kindle Paperwhite", "Fujifilm X100V", "Garmin Forerunner 255", "Steam Deck",
           "Framework laptop", "Sony WH-1000XM5", "iPad mini", "Nintendo Switch"]  # fmt: skip
SPORTS = ["bouldering", "rowing", "padel", "trail running", "cross-country skiing", "judo",
          "open-water swimming", "ultimate frisbee"]  # fmt: skip
INSTRUMENTS = ["cello", "ukulele", "drums", "bass guitar", "piano", "saxophone"]
LANGS = ["Portuguese", "Japanese", "German", "Swahili", "Italian", "Mandarin", "Polish"]
BOOKS = ["Dune", "Middlemarch", "The Left Hand of Darkness", "Piranesi", "Project Hail Mary",
         "The Remains of the Day", "Circe"]  # fmt: skip
CARS = ["a 2014 Volvo V70", "a secondhand Nissan Leaf", "a Toyota Corolla hybrid",
        "a Vespa scooter"]  # fmt: skip
ALLERGENS = ["peanuts", "shellfish", "penicillin", "cats", "pollen", "gluten"]
TEAMS = ["Benfica", "the Denver Nuggets", "Celtic", "Arsenal", "the Montréal Canadiens"]

# (key, value, [(type, question), ...], kind). Slots: {n} the user's name, others from pools.
T = tuple[str, str, list[tuple[str, str]]]
TEMPLATES: list[T] = [
    ("home_city", "{n} lives in {city}, in a rented flat near the old town",
     [("name", "Where is {n} based?"), ("keyword", "Anything fun to do around {city} for them?")]),
    ("hometown", "Grew up in a small fishing village near {city2}",
     [("paraphrase", "Where are they originally from?"), ("keyword", "What's the link with {city2}?")]),
    ("job", "{n} works as {role} at {company}",
     [("name", "What does {n} do for a living?"), ("keyword", "Who is their employer, {company}?")]),
    ("work_schedule", "Works night shifts three times a week, usually Tuesday to Thursday",
     [("paraphrase", "When is {n} free in the daytime?"), ("keyword", "Which nights are the shifts on?")]),
    ("manager", "{n}'s manager is {p1}, who is very demanding about deadlines",
     [("keyword", "How does {n} get on with {p1}?"), ("name", "{n}'s boss?")]),
    ("sister", "{n}'s sister {p2} is a midwife and lives in {city3}",
     [("keyword", "What does {p2} do?"), ("name", "Does {n} have siblings?")]),
    ("partner", "{n} has been married to {p3} since {year}; they met at university",
     [("keyword", "How long have {n} and {p3} been together?"), ("paraphrase", "Is this person single?")]),
    ("kids", "Has two children: {p4}, who is 7, and {p5}, who is 4",
     [("keyword", "How old is {p4}?"), ("paraphrase", "Is {n} a parent?")]),
    ("best_friend", "Best friend {p6} from school; they go camping together every summer",
     [("keyword", "Who is {p6}?"), ("paraphrase", "Who does {n} trust most outside the family?")]),
    ("pet", "{n} has a {pet_kind} called {pet}, adopted from a shelter in {year2}",
     [("keyword", "How is {pet} doing?"), ("paraphrase", "Any animals at home?")]),
    ("birthday", "{n}'s birthday is on {month} {day}",
     [("name", "When was {n} born?"), ("paraphrase", "When should I send a card with wishes?")]),
    ("anniversary", "Wedding anniversary on {month2} {day2}; usually celebrates with a dinner out",
     [("keyword", "Anything planned for {month2}?"), ("paraphrase", "When did they tie the knot?")]),
    ("diet", "{n} is vegetarian and avoids fish as well",
     [("paraphrase", "Any dietary restrictions for a dinner party?"), ("name", "Does {n} eat meat?")]),
    ("allergy", "Severely allergic to {allergen}; carries an EpiPen",
     [("keyword", "Is {allergen} a problem?"), ("paraphrase", "Any medical emergencies I should watch for?")]),
    ("favorite_cuisine", "{n} loves {cuisine} food, especially from a little place downtown",
     [("paraphrase", "Where should we go out to eat tonight?"), ("keyword", "Do they like {cuisine}?")]),
    ("coffee", "Drinks oat milk flat whites, never after 2pm",
     [("paraphrase", "How do they take their caffeine?"), ("keyword", "Flat white or espresso?")]),
    ("sport", "{n} does {sport} twice a week at a club in {city}",
     [("keyword", "How long has {n} been into {sport}?"), ("paraphrase", "How do they stay fit?")]),
    ("running_goal", "Training for the {city} half marathon in {month3}, aiming for under 1h50",
     [("keyword", "What time is the half marathon target?"), ("paraphrase", "Any races coming up?")]),
    ("instrument", "Plays the {instrument} in an amateur orchestra",
     [("keyword", "Does {n} still play {instrument}?"), ("paraphrase", "Is {n} musical?")]),
    ("music_taste", "Listens mostly to 70s soul and Afrobeat records on vinyl",
     [("keyword", "Favorite vinyl records?"), ("paraphrase", "What songs would make a good playlist for them?")]),
    ("reading", "{n}'s favorite novel is {book}; rereads it every couple of years",
     [("keyword", "Has {n} read {book}?"), ("paraphrase", "What should I gift a bookworm like this?")]),
    ("language_learning", "Learning {lang} on Duolingo and with a tutor on Mondays",
     [("keyword", "How is the {lang} going?"), ("paraphrase", "Is {n} studying any foreign tongue?")]),
    ("native_language", "{n} speaks English and {lang2} at home",
     [("name", "Which languages does {n} speak?"), ("keyword", "Is {lang2} spoken at home?")]),
    ("trip_plan", "Planning a two-week trip to {trip} in {month4} with {p3}",
     [("keyword", "When is the {trip} trip?"), ("paraphrase", "Any holidays booked?")]),
    ("past_trip", "Went backpacking through {trip2} in {year3} and loved the street food",
     [("keyword", "What did {n} think of {trip2}?"), ("paraphrase", "Where has {n} traveled before?")]),
    ("car", "{n} drives {car}",
     [("paraphrase", "How does {n} get around town?"), ("name", "{n}'s vehicle?")]),
    ("commute", "Cycles 12 km to work along the river path",
     [("paraphrase", "How long does it take them to reach the office?"), ("keyword", "Is the river path safe for bikes?")]),
    ("gadget", "Bought a {gadget} last month and uses it daily",
     [("keyword", "Is the {gadget} worth it?"), ("paraphrase", "Any recent purchases?")]),
    ("laptop", "Uses a ThinkPad X1 Carbon with Fedora Linux for work",
     [("keyword", "Which Linux distro?"), ("paraphrase", "What computer is {n} on?")]),
    ("team", "Huge fan of {team}; never misses a home game",
     [("keyword", "Did {team} win last night?"), ("paraphrase", "Which club does {n} support?")]),
    ("savings_goal", "Saving for a deposit on a house, wants to buy within two years",
     [("paraphrase", "What are they putting money aside for?"), ("keyword", "How big a deposit?")]),
    ("budget", "{n} keeps a strict monthly budget in a spreadsheet",
     [("paraphrase", "Is {n} careful with money?"), ("name", "{n} and finances?")]),
    ("health", "Recovering from knee surgery in {month5}; physio twice a week",
     [("keyword", "How is the knee?"), ("paraphrase", "Any injuries lately?")]),
    ("sleep", "Struggles with insomnia and uses a meditation app before bed",
     [("keyword", "Does meditation help?"), ("paraphrase", "How well do they rest at night?")]),
    ("communication_style", "{n} prefers short, direct answers without small talk",
     [("paraphrase", "How should I phrase replies to this user?"), ("name", "How does {n} like to be spoken to?")]),
    ("timezone", "{n} is in the {tz} time zone",
     [("paraphrase", "What time is it where they are?"), ("keyword", "Is {n} on {tz}?")]),
    ("volunteering", "Volunteers at the {city} food bank on Saturday mornings",
     [("keyword", "Which Saturday activity is at the food bank?"), ("paraphrase", "Does {n} do any charity work?")]),
    ("garden", "Grows tomatoes and chillies on the balcony",
     [("keyword", "How are the tomatoes?"), ("paraphrase", "Any plants they look after?")]),
    ("mother", "{n}'s mother {p7} lives in {city2} and is retiring next year",
     [("keyword", "When is {p7} retiring?"), ("name", "How is {n}'s mom?")]),
    ("dislike", "{n} hates crowded places and loud bars",
     [("paraphrase", "Would a packed nightclub be a fun outing for them?"), ("name", "What does {n} dislike?")]),
    ("move_plan", "Considering moving to {city3} next spring to be closer to {p2}",
     [("keyword", "Why {city3}?"), ("paraphrase", "Any plans to relocate?")]),
    ("course", "Enrolled in an evening course on machine learning at the community college",
     [("keyword", "How is the machine learning course?"), ("paraphrase", "Is {n} studying anything in the evenings?")]),
]  # fmt: skip

# Everyday chat filler: facts nobody asks about here (they make retrieval harder).
FILLER_SUBJECTS = ["coffee shops", "weekend markets", "podcasts", "board games", "baking bread",
                   "photography", "hiking trails", "crosswords", "thrift stores", "documentaries",
                   "houseplants", "jazz", "yoga", "cooking curries", "woodworking", "chess",
                   "sci-fi films", "running shoes", "tea", "comics", "museums", "camping gear"]  # fmt: skip
FILLER_VERBS = ["Recently got into", "Asked for recommendations on", "Mentioned enjoying",
                "Is curious about", "Complained about the price of", "Watched a video about",
                "Wants to try", "Read an article on"]  # fmt: skip
# Filler that mentions people, places and things too (other people's names, other cities).
FILLER_EVENTS = ["{p} recommended a bakery in {city}", "Asked about train times to {city}",
                 "Had lunch with {p} at a new ramen bar", "Watched {team} highlights with {p}",
                 "Forwarded an article about {city} housing prices", "Helped {p} move flats",
                 "Compared prices of the {gadget} online", "Asked for a {cuisine} recipe",
                 "Borrowed a book from {p}", "Thinking about a weekend in {trip}",
                 "Sent {p} a birthday message", "Looked up {sport} classes for {p}"]  # fmt: skip
TIMEZONES = ["Europe/Lisbon", "Asia/Tokyo", "America/Denver", "Europe/Warsaw",
             "Africa/Nairobi", "America/Toronto"]  # fmt: skip
PET_KINDS = ["dog", "cat", "rabbit", "parrot"]


def _stems(text: str) -> set[str]:
    """Crude word roots (first 5 letters) for checking that a paraphrase shares no word."""
    from proxy.services.query_terms import query_terms

    return {w[:5] for w in query_terms(text)}


def _slots(rng: random.Random, name: str) -> dict[str, str]:
    people = rng.sample(PEOPLE, 7)
    cities = rng.sample(CITIES, 3)
    trips = rng.sample(TRIPS, 2)
    langs = rng.sample(LANGS, 2)
    months = rng.sample(MONTHS, 5)
    return {
        "n": name,
        "city": cities[0], "city2": cities[1], "city3": cities[2],
        "trip": trips[0], "trip2": trips[1],
        **{f"p{i + 1}": p for i, p in enumerate(people)},
        "pet": rng.choice(PETS), "pet_kind": rng.choice(PET_KINDS),
        "company": rng.choice(COMPANIES), "role": rng.choice(ROLES),
        "cuisine": rng.choice(CUISINES), "gadget": rng.choice(GADGETS),
        "sport": rng.choice(SPORTS), "instrument": rng.choice(INSTRUMENTS),
        "lang": langs[0], "lang2": langs[1], "book": rng.choice(BOOKS), "car": rng.choice(CARS),
        "allergen": rng.choice(ALLERGENS), "team": rng.choice(TEAMS), "tz": rng.choice(TIMEZONES),
        "month": months[0], "month2": months[1], "month3": months[2], "month4": months[3],
        "month5": months[4],
        "day": str(rng.randint(1, 28)), "day2": str(rng.randint(1, 28)),
        "year": str(rng.randint(2008, 2020)), "year2": str(rng.randint(2015, 2024)),
        "year3": str(rng.randint(2010, 2019)),
    }  # fmt: skip


def build(seed: int = SEED, users: int = 8, fillers: int = 160) -> dict[str, Any]:
    rng = random.Random(seed)
    out_users: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    for u, name in enumerate(NAMES[:users]):
        slots = _slots(rng, name)
        user = f"user_{u + 1}"
        facts: list[dict[str, str]] = []
        chosen = rng.sample(TEMPLATES, k=len(TEMPLATES) - 6)
        by_key: dict[str, str] = {}
        for key, value, qs in chosen:
            fid = f"{user}_{key}"
            facts.append({"id": fid, "key": key, "value": value.format(**slots)})
            by_key[key] = fid
            for qtype, q in qs:
                text = q.format(**slots)
                questions.append({"user": user, "question": text, "relevant": [fid], "type": qtype})
        family = [by_key[k] for k in ("sister", "partner", "kids", "mother") if k in by_key]
        if len(family) >= 2:
            for q in (f"Tell me about {name}'s family", "Who are their relatives?"):
                questions.append({"user": user, "question": q, "relevant": family, "type": "multi"})
        food = [by_key[k] for k in ("diet", "allergy", "favorite_cuisine") if k in by_key]
        if len(food) >= 2:
            q = f"Planning to cook for {name}: what should I know?"
            questions.append({"user": user, "question": q, "relevant": food, "type": "multi"})
        for i in range(fillers):
            lead = f"{name} " if rng.random() < 0.5 else ""
            if rng.random() < 0.5:
                event = rng.choice(FILLER_EVENTS).format(
                    p=rng.choice(PEOPLE),
                    city=rng.choice(CITIES),
                    team=rng.choice(TEAMS),
                    gadget=rng.choice(GADGETS),
                    cuisine=rng.choice(CUISINES),
                    trip=rng.choice(TRIPS),
                    sport=rng.choice(SPORTS),
                )
                value = f"{lead}{event[0].lower() + event[1:]}" if lead else event
            else:
                subject = rng.choice(FILLER_SUBJECTS)
                verb = rng.choice(FILLER_VERBS)
                value = f"{lead}{verb[0].lower() + verb[1:] if lead else verb} {subject}"
            facts.append({"id": f"{user}_note_{i}", "key": f"note_{i}", "value": value})
        out_users.append({"user": user, "name": name, "facts": facts})
    texts = {f["id"]: f"{f['key'].replace('_', ' ')}: {f['value']}" for u in out_users
             for f in u["facts"]}  # fmt: skip
    for q in questions:
        if q["type"] == "paraphrase":
            shared = _stems(q["question"]) & set().union(*(_stems(texts[r]) for r in q["relevant"]))
            if shared:
                q["type"] = "partial_overlap"
    return {"seed": seed, "users": out_users, "questions": questions}


def write(out: Path, data: dict[str, Any]) -> dict[str, int]:
    """The set as JSON (stable: same content every time); returns its questions per type."""
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    types: dict[str, int] = {}
    for q in data["questions"]:
        types[q["type"]] = types.get(q["type"], 0) + 1
    return types


def main() -> None:
    data = build()
    types = write(OUT, data)
    facts = sum(len(u["facts"]) for u in data["users"])
    print(f"{OUT}: {len(data['users'])} users, {facts} facts, {len(data['questions'])} questions")
    print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(types.items())))


if __name__ == "__main__":
    main()
