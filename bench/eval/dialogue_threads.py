# ruff: noqa: E501  (the storylines are data: one event and its questions per entry)
"""Storylines for ``make_dialogue_set.py``: what one speaker lives through across sessions.

A storyline is a topic with two or three events, told in successive sessions. Each event has
several ways of being observed (one is picked) and the questions it answers, with their type:

- ``temporal``: "When did ...?" (the answer is the session date the fact carries);
- ``single``: a plain question that shares a word or two with the observation;
- ``paraphrase``: asked in other words (checked by the generator: no shared content word but
  the speakers' names, else it is counted as ``single``);
- ``other``: names the other speaker as well (the two names are in every fact of the scope).

``react`` are what the OTHER speaker says back about the event (same topic, wrong answer: the
hard negatives of a real conversation). ``multi`` questions need every event of the storyline.
``category`` pairs storylines for "what do A and B both ..." questions.

Placeholders: {S} the speaker, {O} the other one, {she}/{her}/{hers_obj} the speaker's pronouns,
and slots filled per speaker (``SLOTS`` in make_dialogue_set.py).
"""

from __future__ import annotations

from typing import Any

Q = tuple[str, str]
Event = dict[str, Any]

# fmt: off
THREADS: list[dict[str, Any]] = [
    {"topic": "pottery", "category": "craft", "events": [
        {"obs": ["{S} signed up for a pottery class at the community arts centre", "{S} started going to a weekly ceramics workshop downtown"],
         "q": [("temporal", "When did {S} sign up for pottery?"), ("paraphrase", "Has {S} picked up any hands-on creative pastime lately?")],
         "react": ["{O} told {S} that working with clay sounds relaxing", "{O} asked {S} to send photos from the studio"]},
        {"obs": ["{S} made a {color} bowl on the wheel and was proud of how even the rim came out", "{S} finished glazing a {color} mug that {she} plans to use every morning"],
         "q": [("single", "What did {S} make in {her} pottery class?"), ("other", "What piece did {S} show {O} from the studio?")],
         "react": ["{O} admired the piece {S} made and wants one too"]},
    ], "multi": [("multi", "What has {S} done with clay so far?")]},
    {"topic": "painting", "category": "craft", "events": [
        {"obs": ["{S} painted a sunset over the lake with watercolours", "{S} spent the weekend painting a landscape of the {city} harbour at dusk"],
         "q": [("single", "What did {S} paint recently?"), ("paraphrase", "Which scene did {S} put on canvas?")],
         "react": ["{O} said {S}'s artwork would look great framed in the hallway"]},
        {"obs": ["{S} sold two of {her} canvases at a local craft fair", "A small gallery in {city} agreed to hang three of {S}'s paintings"],
         "q": [("temporal", "When did {S} first get {her} art shown or sold?"), ("other", "What art news did {S} share with {O}?")],
         "react": ["{O} congratulated {S} and promised to visit the exhibition"]},
    ], "multi": [("multi", "How is {S}'s art going, from first pictures to selling them?")]},
    {"topic": "hiking", "category": "outdoors", "events": [
        {"obs": ["{S} hiked to the summit of {mountain} with {friend} and saw snow at the top", "{S} did a twelve-mile trail around {mountain} and got blisters"],
         "q": [("temporal", "When did {S} go up {mountain}?"), ("paraphrase", "Which peak did {S} climb on foot?")],
         "react": ["{O} asked {S} which boots are good for steep trails"]},
        {"obs": ["{S} bought a lightweight tent and a new backpack for longer treks", "{S} is planning a three-day walk along the coast path next month"],
         "q": [("single", "What hiking gear did {S} buy?"), ("single", "What longer trek is {S} preparing for?")],
         "react": []},
    ], "multi": [("multi", "What has {S} done or planned for walking in the mountains and along the coast?")]},
    {"topic": "camping", "category": "outdoors", "events": [
        {"obs": ["{S} went camping at {park} with {her} family and roasted marshmallows by the fire", "{S} spent two nights in a tent at {park}; the kids loved the stars"],
         "q": [("temporal", "When did {S} go camping at {park}?"), ("paraphrase", "Where did {S} sleep outdoors with the family?")],
         "react": ["{O} said {she_o} has not slept in a tent since school"]},
        {"obs": ["{S} went camping again, this time by the beach, and watched the meteor shower", "{S} took the family to a campsite near the dunes and saw shooting stars"],
         "q": [("single", "What did {S} see on the beach campsite trip?"), ("temporal", "When did {S} camp by the beach?")],
         "react": ["{O} thinks the meteor shower photos {S} sent are stunning"]},
    ], "multi": [("multi", "Where has {S} camped?")]},
    {"topic": "running", "category": "fitness", "events": [
        {"obs": ["{S} ran a charity 5k for a mental health organisation", "{S} finished a charity race raising money for a suicide-prevention hotline"],
         "q": [("temporal", "When did {S} run the charity race?"), ("paraphrase", "Did {S} take part in any fundraising event on foot?")],
         "react": ["{O} donated to {S}'s fundraiser and cheered {hers_obj} on"]},
        {"obs": ["{S} signed up for the {city} half marathon and is following a twelve-week plan", "{S} is training for a half marathon and runs at 6am before work"],
         "q": [("single", "What race is {S} training for?"), ("other", "Which long-distance event did {S} tell {O} about?")],
         "react": ["{O} offered to bike alongside {S} on the long training runs"]},
    ], "multi": [("multi", "What running events has {S} done or entered?")]},
    {"topic": "yoga", "category": "fitness", "events": [
        {"obs": ["{S} joined a beginner yoga class and can almost touch {her} toes now", "{S} started doing yoga three mornings a week to help {her} back"],
         "q": [("single", "Why did {S} start yoga?"), ("paraphrase", "What does {S} do in the mornings to stay flexible?")],
         "react": []},
        {"obs": ["{S} went on a weekend yoga retreat in the hills and came back calm", "{S} attended a silent meditation and stretching retreat outside {city}"],
         "q": [("temporal", "When did {S} go on the retreat?"), ("paraphrase", "Has {S} been away somewhere to unwind recently?")],
         "react": ["{O} asked {S} whether the retreat was worth the money"]},
    ], "multi": []},
    {"topic": "pet_dog", "category": "pets", "events": [
        {"obs": ["{S} adopted a puppy named {petname} from the shelter", "{S} brought home a rescue dog called {petname}; he is a {breed} mix"],
         "q": [("temporal", "When did {S} get {petname}?"), ("paraphrase", "Does {S} have a furry companion at home?")],
         "react": ["{O} can't wait to meet {petname}"]},
        {"obs": ["{petname} chewed one of {S}'s shoes and had to go to the vet for a check-up", "{S} took {petname} to obedience classes because he keeps pulling on the lead"],
         "q": [("single", "What trouble has {S} had with {petname}?"), ("other", "What did {S} tell {O} about {her} dog misbehaving?")],
         "react": ["{O} suggested {S} try a harness for the walks"]},
        {"obs": ["{S} adopted a second animal, a grey kitten called {petname2}", "{S} now also has a tabby cat named {petname2} who sleeps on the piano"],
         "q": [("single", "What is the name of {S}'s cat?"), ("temporal", "When did {S} add {petname2} to the family?")],
         "react": []},
    ], "multi": [("multi", "What pets does {S} have?"), ("multi", "Which animals live with {S}?")]},
    {"topic": "reading", "category": "books", "events": [
        {"obs": ["{S} just finished reading '{book}' and could not put it down", "{S} recommended '{book}' and said the ending made {hers_obj} cry"],
         "q": [("single", "What book did {S} recently finish?"), ("other", "Which novel did {S} recommend to {O}?")],
         "react": ["{O} added '{book}' to {her_o} reading list"]},
        {"obs": ["{S} joined a book club at the library that meets on the first Thursday of each month", "{S} started a reading group with neighbours; they discuss one novel a month"],
         "q": [("temporal", "When did {S} join a book club?"), ("paraphrase", "Does {S} discuss literature with other people regularly?")],
         "react": []},
        {"obs": ["{S} is now reading '{book2}' for the club and finds it slow", "{S} picked up '{book2}' at a second-hand shop"],
         "q": [("single", "What is {S} reading now?")],
         "react": ["{O} read '{book2}' years ago and liked the last part best"]},
    ], "multi": [("multi", "What books has {S} read?")]},
    {"topic": "guitar", "category": "music", "events": [
        {"obs": ["{S} has been learning {instrument} from online videos for a few weeks", "{S} bought a second-hand {instrument} and practises in the evenings"],
         "q": [("single", "Which instrument is {S} learning?"), ("paraphrase", "Does {S} make any kind of music?")],
         "react": ["{O} played in a band as a teenager and offered {S} some tips"]},
        {"obs": ["{S} performed at an open-mic night at a café and was very nervous", "{S} played two songs in front of an audience for the first time at a local bar"],
         "q": [("temporal", "When did {S} first perform live?"), ("other", "How did {S}'s first gig go, according to what {she} told {O}?")],
         "react": ["{O} went to the open-mic night to support {S}"]},
    ], "multi": [("multi", "What has {S} done with {her} {instrument} so far?")]},
    {"topic": "concert", "category": "music", "events": [
        {"obs": ["{S} went to a {band} concert with {friend} and danced all night", "{S} saw {band} live at the arena and lost {her} voice from singing"],
         "q": [("temporal", "When did {S} see {band}?"), ("paraphrase", "Has {S} been to any live shows?")],
         "react": ["{O} is jealous because the {band} tickets sold out for {her_o}"]},
    ], "multi": []},
    {"topic": "job_change", "category": None, "events": [
        {"obs": ["{S} got laid off from {her} job at {company} after a restructuring", "{S} lost {her} position at {company} when the team was cut"],
         "q": [("temporal", "When did {S} lose {her} job?"), ("paraphrase", "Why was {S} looking for work?")],
         "react": ["{O} offered to look over {S}'s CV"]},
        {"obs": ["{S} had three interviews this week, one for a {job} role", "{S} has been applying for {job} positions and got a call back"],
         "q": [("single", "What kind of position is {S} applying for?")],
         "react": []},
        {"obs": ["{S} accepted an offer to work as a {job} at {company2}", "{S} starts a new job as a {job} at {company2} next Monday"],
         "q": [("single", "Where does {S} work now?"), ("temporal", "When did {S} get the new job?"), ("other", "What good career news did {S} share with {O}?")],
         "react": ["{O} bought {S} a cake to celebrate the new job"]},
    ], "multi": [("multi", "How did {S}'s career change over these months, from leaving {company} onward?")]},
    {"topic": "counseling", "category": None, "events": [
        {"obs": ["{S} wants to study psychology and become a counselor for teenagers", "{S} is thinking of a career in counseling because of the support {she} got growing up"],
         "q": [("single", "What career is {S} considering?"), ("paraphrase", "What does {S} hope to do professionally in future?")],
         "react": []},
        {"obs": ["{S} enrolled in an evening certificate course in youth counseling", "{S} was accepted into a part-time psychology program at the university"],
         "q": [("temporal", "When did {S} enroll in the psychology studies?"), ("single", "What course is {S} taking?")],
         "react": ["{O} said {S} is a great listener and will be good at it"]},
    ], "multi": [("multi", "What steps has {S} taken toward becoming a counselor?")]},
    {"topic": "volunteering", "category": "community", "events": [
        {"obs": ["{S} volunteered at the animal shelter on Saturday, walking dogs", "{S} spent a morning helping at the {city} food bank sorting donations"],
         "q": [("temporal", "When did {S} volunteer?"), ("paraphrase", "Does {S} give time to any good causes?")],
         "react": []},
        {"obs": ["{S} organised a fundraiser bake sale that raised {amount} dollars", "{S} ran a charity bake sale at {her} kids' school"],
         "q": [("single", "How much did {S}'s bake sale raise?"), ("other", "What fundraising did {S} tell {O} about?")],
         "react": ["{O} baked lemon bars for {S}'s sale"]},
    ], "multi": [("multi", "What charity work has {S} done?")]},
    {"topic": "support_group", "category": "community", "events": [
        {"obs": ["{S} went to an LGBTQ support group and found the stories inspiring", "{S} attended a support group for transgender people and felt accepted"],
         "q": [("temporal", "When did {S} go to the support group?"), ("paraphrase", "Where has {S} found a sense of belonging lately?")],
         "react": ["{O} told {S} {she_o} is proud of {hers_obj}"]},
        {"obs": ["{S} marched in the pride parade with friends from the group", "{S} went to the pride march in {city} carrying a rainbow flag"],
         "q": [("temporal", "When did {S} go to pride?"), ("single", "What event did {S} attend with the group?")],
         "react": []},
        {"obs": ["{S} gave a talk at a school about {her} transition and acceptance", "{S} spoke to high school students about gender identity"],
         "q": [("single", "Who did {S} speak to about {her} experience?"), ("temporal", "When did {S} give the school talk?")],
         "react": ["{O} thought {S}'s talk was very brave"]},
    ], "multi": [("multi", "What LGBTQ community events has {S} taken part in?")]},
    {"topic": "adoption", "category": None, "events": [
        {"obs": ["{S} is researching adoption agencies and wants to raise a child on {her} own", "{S} has started looking into becoming a single adoptive parent"],
         "q": [("single", "What is {S} researching?"), ("paraphrase", "Is {S} hoping to start a family?")],
         "react": ["{O} said {S} would be a wonderful mother"]},
        {"obs": ["{S} passed the home study for the adoption interview", "{S} had the adoption agency visit {her} flat and it went well"],
         "q": [("temporal", "When did {S} pass the adoption home visit?")],
         "react": []},
    ], "multi": [("multi", "How far along is {S} with adopting?")]},
    {"topic": "kids", "category": "family", "events": [
        {"obs": ["{S}'s eldest, {kid}, lost a first tooth and wants to be a dinosaur scientist", "{S}'s kid {kid} is obsessed with dinosaurs and built a volcano for school"],
         "q": [("single", "What is {kid} into?"), ("paraphrase", "What do {S}'s children enjoy?")],
         "react": []},
        {"obs": ["{S} took the kids to the natural history museum and they loved the fossils", "{S} spent Sunday at the science museum with {kid} and {kid2}"],
         "q": [("temporal", "When did {S} go to the museum?"), ("single", "Where did {S} take the children?")],
         "react": ["{O} recommended the planetarium next time"]},
        {"obs": ["{kid2} started kindergarten and cried at drop-off", "{S}'s youngest, {kid2}, had the first day at a new school"],
         "q": [("temporal", "When did {kid2} start school?")],
         "react": []},
    ], "multi": [("multi", "What have {S}'s kids been up to?")]},
    {"topic": "family_trip", "category": "travel", "events": [
        {"obs": ["{S} booked a trip to {country} for the summer holidays", "{S} and {partner} are planning a two-week holiday in {country}"],
         "q": [("single", "Where is {S} going on holiday?"), ("paraphrase", "What vacation plans does {S} have?")],
         "react": ["{O} visited {country} years ago and sent {S} a list of places to eat"]},
        {"obs": ["{S} got back from {country}; the highlight was a boat tour", "{S} came home from the holiday in {country} sunburnt but happy"],
         "q": [("temporal", "When did {S} return from {country}?"), ("other", "What did {S} tell {O} was the best part of the trip?")],
         "react": []},
    ], "multi": []},
    {"topic": "city_trip", "category": "travel", "events": [
        {"obs": ["{S} went on a work trip to {city2} and walked around the old town", "{S} spent a weekend in {city2} visiting {friend}"],
         "q": [("temporal", "When did {S} go to {city2}?"), ("paraphrase", "Which places has {S} visited recently?")],
         "react": []},
        {"obs": ["{S} took a train to {city3} for a friend's wedding", "{S} went to {city3} for a wedding and danced until 2am"],
         "q": [("single", "Why did {S} go to {city3}?")],
         "react": ["{O} asked {S} for photos of the wedding dress"]},
    ], "multi": [("multi", "Which cities has {S} travelled to?")]},
    {"topic": "cooking", "category": "food", "events": [
        {"obs": ["{S} tried making {dish} from scratch and burnt the first batch", "{S} cooked {dish} for {partner}'s birthday dinner"],
         "q": [("single", "What dish did {S} cook?"), ("paraphrase", "What has {S} been making in the kitchen?")],
         "react": ["{O} asked {S} for the {dish} recipe"]},
        {"obs": ["{S} started baking sourdough bread every weekend", "{S} has a sourdough starter named Doughy and bakes loaves on Sundays"],
         "q": [("single", "What does {S} bake on weekends?"), ("temporal", "When did {S} get into sourdough?")],
         "react": []},
    ], "multi": [("multi", "What has {S} cooked or baked?")]},
    {"topic": "garden", "category": "food", "events": [
        {"obs": ["{S} planted tomatoes, basil and zucchini in the backyard", "{S} started a vegetable patch behind the house"],
         "q": [("single", "What is {S} growing?"), ("paraphrase", "Does {S} have green fingers?")],
         "react": ["{O} gave {S} some seedlings from {her_o} greenhouse"]},
        {"obs": ["{S} harvested so many zucchini that {she} gave bags of them to the neighbours", "Slugs ate half of {S}'s lettuce"],
         "q": [("temporal", "When did {S} have the big harvest or garden trouble?")],
         "react": []},
    ], "multi": []},
    {"topic": "health", "category": None, "events": [
        {"obs": ["{S} sprained {her} ankle playing {sport}", "{S} hurt {her} knee during a {sport} match and is on crutches"],
         "q": [("temporal", "When did {S} get injured?"), ("paraphrase", "Has {S} had any accidents lately?")],
         "react": ["{O} brought {S} soup while {she} was recovering"]},
        {"obs": ["{S} finished physiotherapy and is allowed to play {sport} again", "{S} is back on the {sport} court after weeks of rehab"],
         "q": [("single", "Is {S} playing {sport} again?")],
         "react": []},
    ], "multi": [("multi", "What happened with {S}'s injury from start to recovery?")]},
    {"topic": "family_loss", "category": None, "events": [
        {"obs": ["{S}'s grandmother passed away and {she} flew home for the funeral", "{S} is grieving {her} grandfather, who died last week"],
         "q": [("temporal", "When did {S} lose {her} grandparent?"), ("paraphrase", "Has {S} had a bereavement?")],
         "react": ["{O} sent flowers and a card to {S}"]},
        {"obs": ["{S} keeps {her} grandmother's old necklace as a reminder of her", "{S} inherited {her} grandfather's record collection"],
         "q": [("single", "What keepsake does {S} have from {her} grandparent?")],
         "react": []},
    ], "multi": []},
    {"topic": "partner", "category": "family", "events": [
        {"obs": ["{S} and {partner} celebrated their fifth anniversary with dinner at a rooftop restaurant", "{S} surprised {partner} with a weekend away for their anniversary"],
         "q": [("temporal", "When was {S}'s anniversary?"), ("single", "How did {S} celebrate with {partner}?")],
         "react": []},
        {"obs": ["{S} and {partner} got engaged on a beach at sunset", "{partner} proposed to {S} during a hike and {she} said yes"],
         "q": [("temporal", "When did {S} get engaged?"), ("paraphrase", "Is {S} going to be married?"), ("other", "What big relationship news did {S} tell {O}?")],
         "react": ["{O} screamed with joy when {S} showed the ring"]},
    ], "multi": []},
    {"topic": "move", "category": None, "events": [
        {"obs": ["{S} moved from {country} four years ago and still misses the food", "{S} grew up in {country} and relocated here after university"],
         "q": [("single", "Where did {S} live before?"), ("paraphrase", "What is {S}'s original homeland?")],
         "react": []},
        {"obs": ["{S} signed a lease on a bigger apartment across town", "{S} is packing boxes to move into a new flat with a balcony"],
         "q": [("temporal", "When did {S} move into the new flat?")],
         "react": ["{O} offered to help {S} carry furniture on moving day"]},
    ], "multi": []},
    {"topic": "car", "category": None, "events": [
        {"obs": ["{S} was in a minor car accident on the highway but nobody was hurt", "Someone rear-ended {S}'s car at a red light"],
         "q": [("temporal", "When did {S} have the car accident?"), ("paraphrase", "Did {S} have any trouble on the road?")],
         "react": ["{O} was relieved that {S} was not injured in the crash"]},
        {"obs": ["{S} bought a used {car} to replace the damaged one", "{S} is now driving a {car} bought second-hand"],
         "q": [("single", "What car does {S} drive now?")],
         "react": []},
    ], "multi": []},
    {"topic": "game", "category": "games", "events": [
        {"obs": ["{S} has been playing {game} every night after work", "{S} got hooked on {game} and reached the final level"],
         "q": [("single", "What game is {S} playing?"), ("paraphrase", "How does {S} unwind in the evenings with a screen?")],
         "react": ["{O} challenged {S} to a match of {game}"]},
        {"obs": ["{S} entered a local {game} tournament and finished third", "{S} won a small prize at a {game} competition"],
         "q": [("temporal", "When did {S} compete in the tournament?")],
         "react": []},
    ], "multi": []},
    {"topic": "board_games", "category": "games", "events": [
        {"obs": ["{S} hosted a board game night with Catan and Codenames", "{S} invited neighbours over for an evening of tabletop games"],
         "q": [("single", "What games did {S} play at the game night?"), ("temporal", "When did {S} host game night?")],
         "react": []},
    ], "multi": []},
    {"topic": "photography", "category": "craft", "events": [
        {"obs": ["{S} bought a mirrorless camera and takes photos of birds in the park", "{S} got into wildlife photography and shot a heron at dawn"],
         "q": [("single", "What does {S} photograph?"), ("paraphrase", "Has {S} taken up any new visual hobby?")],
         "react": ["{O} asked {S} to photograph {her_o} kids"]},
        {"obs": ["One of {S}'s photos won second place in a newspaper contest", "{S}'s picture of a fox was printed in the local paper"],
         "q": [("temporal", "When did {S}'s photo get recognition?")],
         "react": []},
    ], "multi": []},
    {"topic": "swimming", "category": "fitness", "events": [
        {"obs": ["{S} started swimming laps at the public pool before work", "{S} took swimming lessons to finally learn front crawl"],
         "q": [("single", "Where does {S} swim?"), ("paraphrase", "What water exercise does {S} do?")],
         "react": []},
        {"obs": ["{S} swam across the lake in an open-water race", "{S} completed a one-mile open-water swim for charity"],
         "q": [("temporal", "When did {S} do the open-water swim?")],
         "react": ["{O} said {she_o} is terrified of deep water"]},
    ], "multi": []},
    {"topic": "festival", "category": "community", "events": [
        {"obs": ["{S} went to a food festival in {city} and tried {dish}", "{S} spent Saturday at a street food market in {city}"],
         "q": [("temporal", "When did {S} go to the food festival?"), ("single", "What did {S} try at the festival?")],
         "react": []},
    ], "multi": []},
    {"topic": "sibling", "category": "family", "events": [
        {"obs": ["{S}'s brother {sibling} visited from {country} for a week", "{S} spent the week showing {her} sister {sibling} around town"],
         "q": [("temporal", "When did {sibling} visit {S}?"), ("paraphrase", "Has any relative come to stay with {S}?")],
         "react": []},
        {"obs": ["{sibling} had a baby girl, so {S} is now an aunt or uncle for the first time", "{S} has a new nephew: {sibling}'s son was born"],
         "q": [("single", "What family news did {S} share about {sibling}?")],
         "react": ["{O} knitted a blanket for {S}'s new niece or nephew"]},
    ], "multi": []},
]

#: Shared-interest questions: both speakers have a storyline of the category; the first event
#: of each answers it.
BOTH: dict[str, list[str]] = {
    "craft": ["What creative hobby do {A} and {B} both have?", "Which artistic pastimes do {A} and {B} share?"],
    "outdoors": ["What do {A} and {B} both like doing in nature?"],
    "fitness": ["How do {A} and {B} both keep in shape?", "What kind of exercise do both {A} and {B} do?"],
    "pets": ["Do {A} and {B} both have animals?"],
    "books": ["What do {A} and {B} both read?"],
    "music": ["What musical interests do {A} and {B} have in common?"],
    "community": ["What have {A} and {B} both done for their community?"],
    "family": ["What is going on in {A}'s and {B}'s families?"],
    "travel": ["Where have {A} and {B} both travelled?"],
    "food": ["What do {A} and {B} both do with food?"],
    "games": ["What games do both {A} and {B} enjoy?"],
}
# fmt: on
