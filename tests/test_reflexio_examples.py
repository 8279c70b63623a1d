# ruff: noqa: E501  (the seed's example strings are kept verbatim)
"""Every Python example of the Reflexio seed (``seeds/reflexio-user-profiles.txt``), run
against the proxy under uvicorn. Each example is transcribed verbatim (indentation restored);
only the client's import and constructor differ::

    import reflexio                                   ->  from proxy import client as reflexio
    client = reflexio.ReflexioClient()                ->  client = reflexio.ReflexioClient(
                                                               url_endpoint=..., api_key=...)

The profiles the examples read are written first through the proxy's own API (facts, or
published interactions learned by the real worker against the fake upstream), and the
printed output is checked. The seed's curl calls are read out of the seed file itself and sent
as written (``test_every_curl_example_of_the_seed``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy import client as reflexio
from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.upstream import FakeUpstream
from tests.test_extraction import FAST, Extraction, op, ops_reply

ALICE = [
    ("laptop", "laptop preferences: lightweight, for programming work", "onboarding"),
    ("hobbies", "interested in hiking and landscape photography", "support_chat"),
    ("music", "likes jazz and classical music", "onboarding"),
    ("work_setup", "laptop preferences at work: lightweight, for programming", "support_chat"),
]


@pytest.fixture
def setup(proxy: Proxy) -> tuple[Proxy, str]:
    _, token = KeyStore(open_database(proxy.settings)).create("acme")
    return proxy, token


def seed(
    client: reflexio.ProfiloClient, user: str, *facts: tuple[str, str, str], **kw: Any
) -> None:
    for key, value, source in facts:
        client.create_fact(key, value, collection_id=user, source=source, **kw)


def test_setup_reads_the_key_from_the_environment(
    setup: tuple[Proxy, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, token = setup
    monkeypatch.setenv("PROFILO_API_KEY", token)
    monkeypatch.setenv("PROFILO_URL", proxy.url)
    client = reflexio.ReflexioClient()  # uses PROFILO_API_KEY / PROFILO_URL
    assert client.get_profiles(user_id="customer_alice").user_profiles == []
    monkeypatch.delenv("PROFILO_API_KEY")
    with pytest.raises(reflexio.ProfiloError) as err:
        reflexio.ReflexioClient().get_profiles(user_id="customer_alice")
    assert err.value.status == 401
    # Reflexio's own variables work too (uses REFLEXIO_API_KEY env var)
    monkeypatch.delenv("PROFILO_URL")
    monkeypatch.setenv("REFLEXIO_API_KEY", token)
    monkeypatch.setenv("REFLEXIO_URL", proxy.url)
    client = reflexio.ReflexioClient()
    assert client.get_config().profile_extractor_config.context_prompt is None
    # Self-hosted: client = reflexio.ReflexioClient(url_endpoint="http://localhost:8081")
    client = reflexio.ReflexioClient(url_endpoint=proxy.url.replace("127.0.0.1", "localhost"))
    assert client.get_profiles(user_id="customer_alice").success


def test_basic_profile_search(setup: tuple[Proxy, str], capsys: pytest.CaptureFixture[str]) -> None:
    proxy, token = setup
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token)
    seed(client, "customer_alice", *ALICE)
    seed(
        client,
        "customer_bob",
        ("laptop", "laptop preferences: lightweight, for programming work", "x"),
    )

    # Search user profiles with semantic queries
    profiles = client.search_user_profiles(
        user_id="customer_alice",
        query="laptop preferences programming work",
        threshold=0.7,
        top_k=5,
    )
    print(f"Found {len(profiles.user_profiles)} relevant profiles:")
    for profile in profiles.user_profiles:
        print(f"Profile: {profile.content}")
        print(f"Source: {profile.source}")
        print(f"Last modified: {profile.last_modified_timestamp}")
        print(f"Generated from: {profile.generated_from_request_id}")
        print("---")

    out = capsys.readouterr().out
    assert "Profile: laptop: laptop preferences: lightweight, for programming work" in out
    assert "Source: onboarding" in out and "jazz" not in out  # below the threshold
    assert profiles.user_profiles and all(
        p.user_id == "customer_alice" for p in profiles.user_profiles
    )
    assert all(p.score is not None and p.score >= 0.7 for p in profiles.user_profiles)
    first = profiles.user_profiles[0]
    fact = client.get_fact(first.profile_id, collection_id="customer_alice")
    assert first.generated_from_request_id == fact.generated_from_request_id is not None
    assert f"Found {len(profiles.user_profiles)} relevant profiles:" in out


def test_advanced_search_with_filtering(setup: tuple[Proxy, str]) -> None:
    proxy, token = setup
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token)
    seed(
        client,
        "customer_bob",
        ("support_issue", "customer support issues with billing", "support_chat"),
        ("support_history", "customer support issues with delivery", "email"),
    )
    client.create_fact(
        "premium_features_usage",
        "premium features usage: daily",
        collection_id="customer_carol",
        metadata={"subscription_tier": "premium"},
    )
    client.create_fact(
        "premium_features", "premium features usage: weekly", collection_id="customer_carol"
    )
    seed(
        client,
        "customer_dave",
        ("laptop_model", "specific product model MacBook Pro 16-inch", "chat"),
        ("phone", "owns an old Android phone", "chat"),
    )

    # Search profiles from specific interaction sources
    chat_profiles = client.search_user_profiles(
        user_id="customer_bob",
        query="customer support issues",
        source="support_chat",  # Only profiles from support interactions
        threshold=0.6,
    )
    # Search profiles with custom features
    premium_profiles = client.search_user_profiles(
        user_id="customer_carol",
        query="premium features usage",
        custom_feature="subscription_tier",  # Filter by custom metadata
        threshold=0.8,
    )
    # High-precision search with strict threshold
    precise_profiles = client.search_user_profiles(
        user_id="customer_dave",
        query="specific product model MacBook Pro 16-inch",
        threshold=0.9,  # Very high threshold for exact matches
        top_k=3,
    )

    assert [p.content for p in chat_profiles.user_profiles] == [
        "support issue: customer support issues with billing"
    ]
    assert [p.custom_features for p in premium_profiles.user_profiles] == [
        {"subscription_tier": "premium"}
    ]
    assert [p.content for p in precise_profiles.user_profiles] == [
        "laptop model: specific product model MacBook Pro 16-inch"
    ]


def test_profile_updates_and_evolution(
    make_proxy: Any, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = make_proxy(learning=FAST, models={"extraction": "gpt-4o-mini"})
    _, token = KeyStore(open_database(proxy.settings)).create("acme")
    Extraction(upstream).script(
        ops_reply(
            op("add", "camera_interest", "photography beginner, wants a first professional camera")
        ),
        ops_reply(op("add", "photography_focus", "landscape photography, wide-angle lenses")),
    )
    # the one change: the constructor (publish waits until the proxy has learned)
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token, publish_wait_seconds=10)

    # Initial interaction creates profile
    initial_interaction = client.publish_interaction(
        user_id="new_user_eve",
        interactions=[
            {
                "role": "User",
                "content": "Hi, I'm a beginner photographer looking to buy my first professional camera",
            }
        ],
        session_id="user_onboarding_001",
        source="initial_consultation",
    )
    # Later interaction updates profile
    updated_interaction = client.publish_interaction(
        user_id="new_user_eve",
        interactions=[
            {
                "role": "User",
                "content": "I've been taking landscape photography classes and now I'm specifically interested in wide-angle lenses",
            }
        ],
        session_id="user_followup_001",
        source="follow_up_consultation",
    )
    # Search for evolution in user interests
    evolution_profiles = client.search_user_profiles(
        user_id="new_user_eve", query="photography interests camera landscape", threshold=0.6
    )
    print("User interest evolution:")
    for profile in evolution_profiles.user_profiles:
        print(f"Generated from: {profile.generated_from_request_id}")
        print(f"Content: {profile.content}")
        print("---")

    assert initial_interaction.success and initial_interaction.status == "done"
    assert updated_interaction.success and updated_interaction.status == "done"
    out = capsys.readouterr().out
    assert f"Generated from: {initial_interaction.request_id}" in out
    assert f"Generated from: {updated_interaction.request_id}" in out
    assert "Content: photography focus: landscape photography, wide-angle lenses" in out
    sources = {p.source for p in evolution_profiles.user_profiles}
    assert sources == {"initial_consultation", "follow_up_consultation"}


def test_profile_change_tracking(
    setup: tuple[Proxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    proxy, token = setup
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token)
    seed(client, "customer_alice", *ALICE)
    seed(client, "customer_bob", ("pet", "has a cat", "chat"))
    music = client.search_user_profiles(user_id="customer_alice", query="jazz").user_profiles[0]
    client.update_fact(music.profile_id, collection_id="customer_alice", value="likes blues")

    # Monitor how profiles change over time
    change_log = client.get_profile_change_log()
    # Filter changes for specific user
    user_changes = [
        log for log in change_log.profile_change_logs if log.user_id == "customer_alice"
    ]
    print(f"Profile changes for customer_alice: {len(user_changes)} changes")
    for change in user_changes[-5:]:  # Last 5 changes
        print(f"\nChange at {change.created_at} (Request: {change.request_id}):")
        if change.added_profiles:
            print(" Added profiles:")
            for profile in change.added_profiles:
                print(f" + {profile.content}")
        if change.removed_profiles:
            print(" Removed profiles:")
            for profile in change.removed_profiles:
                print(f" - {profile.content}")

    out = capsys.readouterr().out
    assert "Profile changes for customer_alice: 5 changes" in out
    assert (
        " + music: likes blues\n Removed profiles:\n - music: likes jazz and classical music" in out
    )
    assert "has a cat" not in out  # another user's change, filtered out by the example
    assert len(change_log.profile_change_logs) == 6  # the account's log holds both users
    last = user_changes[-1]
    assert (
        last.request_id
        == client.get_fact(
            music.profile_id, collection_id="customer_alice"
        ).generated_from_request_id
    )
    assert [c.created_at for c in user_changes] == sorted(c.created_at for c in user_changes)


def test_profile_cleanup_and_management(
    setup: tuple[Proxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    proxy, token = setup
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token)
    seed(
        client,
        "customer_frank",
        ("outdated_info", "outdated information: deprecated preferences for fax", "chat"),
        ("name", "Frank", "chat"),
    )
    seed(
        client,
        "customer_george",
        ("contact_details", "personal sensitive information: phone 555-0100", "chat"),
        ("pet", "has a dog called Rex", "chat"),
    )

    # Delete outdated or irrelevant profiles
    outdated_cleanup = client.delete_profile(
        user_id="customer_frank",
        search_query="outdated information deprecated preferences",
        wait_for_response=True,
    )
    print(f"Cleanup result: {outdated_cleanup.success} - {outdated_cleanup.message}")
    # Delete specific profile by ID
    specific_deletion = client.delete_profile(
        user_id="customer_frank", profile_id="specific_profile_uuid_here", wait_for_response=True
    )
    # Bulk cleanup by criteria
    privacy_cleanup = client.delete_profile(
        user_id="customer_george",
        search_query="personal sensitive information contact details",
        wait_for_response=True,
    )

    assert "Cleanup result: True - deleted 1 profile(s)" in capsys.readouterr().out
    assert [p.content for p in client.get_profiles(user_id="customer_frank").user_profiles] == [
        "name: Frank"
    ]
    assert (
        not specific_deletion.success and "specific_profile_uuid_here" in specific_deletion.message
    )
    assert privacy_cleanup.success and len(privacy_cleanup.deleted_profile_ids) == 1
    left = client.get_profiles(user_id="customer_george").user_profiles
    assert [p.content for p in left] == ["pet: has a dog called Rex"]
    # by a real id: gone
    frank = client.get_profiles(user_id="customer_frank").user_profiles[0]
    by_id = client.delete_profile(user_id="customer_frank", profile_id=frank.profile_id)
    assert by_id.success and by_id.deleted_profile_ids == [frank.profile_id]
    assert client.get_profiles(user_id="customer_frank").user_profiles == []


def test_basic_prompt_customization(
    setup: tuple[Proxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    proxy, token = setup
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token)

    # Optional: tune what profiles are extracted from interactions
    profile_extractor = {
        "profile_content_definition_prompt": "Extract user's name, interests, preferences, and any personal information mentioned in the conversation",
        "context_prompt": "You are analyzing customer service conversations to build user profiles",
        "should_extract_profile_prompt_override": "when the message contains personal information, preferences, or user characteristics",
    }
    config = client.get_config()
    config.profile_extractor_config = profile_extractor
    response = client.set_config(config)
    print(f"Profile extraction configured: {response['success']}")

    assert "Profile extraction configured: True" in capsys.readouterr().out
    stored = client.get_config().profile_extractor_config
    assert stored.model_dump() == profile_extractor
    other = reflexio.ReflexioClient(
        url_endpoint=proxy.url, api_key=KeyStore(open_database(proxy.settings)).create("b")[1]
    )
    assert other.get_config().profile_extractor_config.context_prompt is None  # per account


def test_domain_specific_prompt_examples(setup: tuple[Proxy, str]) -> None:
    proxy, token = setup
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token)

    # E-commerce profile extraction
    ecommerce_extractor = {
        "profile_content_definition_prompt": """
Extract customer information including:
- Product preferences and interests
- Budget range or price sensitivity
- Shopping behavior and patterns
- Brand preferences
- Purchase history mentions
- Delivery preferences
""",
        "context_prompt": "Analyzing e-commerce customer interactions to understand shopping behavior and preferences",
        "should_extract_profile_prompt_override": "when customer mentions products, prices, preferences, or shopping-related information",
    }
    # Educational platform profile extraction
    education_extractor = {
        "profile_content_definition_prompt": """
Extract student information including:
- Learning goals and objectives
- Subject interests and strengths
- Learning style preferences
- Current skill level
- Progress and achievements
- Challenges and difficulties
""",
        "context_prompt": "Analyzing student interactions to create personalized learning profiles",
        "should_extract_profile_prompt_override": "when student mentions learning goals, difficulties, interests, or academic information",
    }
    # Healthcare profile extraction
    healthcare_extractor = {
        "profile_content_definition_prompt": """
Extract patient information including:
- Symptoms and health concerns
- Medical history mentions
- Treatment preferences
- Lifestyle factors
- Communication preferences
- Health goals
""",
        "context_prompt": "Analyzing patient interactions while maintaining strict privacy and medical confidentiality",
        "should_extract_profile_prompt_override": "when patient mentions health-related information, symptoms, or medical concerns",
    }
    config = client.get_config()
    config.profile_extractor_config = (
        ecommerce_extractor  # Choose the extractor that matches your domain
    )
    client.set_config(config)

    assert client.get_config().profile_extractor_config.model_dump() == ecommerce_extractor
    for extractor in (education_extractor, healthcare_extractor):
        config.profile_extractor_config = extractor
        assert client.set_config(config).success
        assert client.get_config().profile_extractor_config.model_dump() == extractor


def test_profile_analytics_and_personalization(
    setup: tuple[Proxy, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed's analytics examples build on one another (``all_user_profiles``)."""
    proxy, token = setup
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token)
    seed(client, "customer_alice", *ALICE)
    seed(
        client,
        "customer_alice",
        ("interests_preferences_hobbies", "interested in hiking. likes jazz", "chat"),
    )

    # -- Profile Content Analysis
    # Get all profiles for comprehensive analysis
    all_user_profiles = client.get_profiles(user_id="customer_alice", top_k=50)
    # Analyze profile themes and patterns
    profile_themes = {}
    source_distribution = {}
    content_length_stats = []
    for profile in all_user_profiles.user_profiles:
        # Track content length
        content_length_stats.append(len(profile.content))
        # Track source distribution
        source = profile.source or "unknown"
        source_distribution[source] = source_distribution.get(source, 0) + 1
        # Simple keyword extraction (in production, use proper NLP)
        keywords = profile.content.lower().split()
        for keyword in keywords:
            if len(keyword) > 3:  # Filter short words
                profile_themes[keyword] = profile_themes.get(keyword, 0) + 1
    # Display analytics
    print("Profile Analytics:")
    print(f"Total profiles: {len(all_user_profiles.user_profiles)}")
    print(
        f"Average content length: {sum(content_length_stats) / len(content_length_stats):.1f} characters"
    )
    print(f"Source distribution: {source_distribution}")
    print(f"Top themes: {sorted(profile_themes.items(), key=lambda x: x[1], reverse=True)[:10]}")

    out = capsys.readouterr().out
    assert "Total profiles: 5" in out
    assert "Source distribution: {'onboarding': 2, 'support_chat': 2, 'chat': 1}" in out
    assert "('programming', 2)" in out

    # -- Temporal Profile Analysis
    from datetime import datetime, timedelta

    # Analyze profile creation patterns
    recent_profiles = []
    older_profiles = []
    cutoff_time = int((datetime.now() - timedelta(days=30)).timestamp())
    for profile in all_user_profiles.user_profiles:
        if profile.last_modified_timestamp > cutoff_time:
            recent_profiles.append(profile)
        else:
            older_profiles.append(profile)
    print(f"Recent profiles (last 30 days): {len(recent_profiles)}")
    print(f"Older profiles: {len(older_profiles)}")
    # Analyze content evolution
    print("\nRecent profile themes:")
    for profile in recent_profiles[:5]:
        print(f" - {profile.content[:80]}...")
    print("\nOlder profile themes:")
    for profile in older_profiles[:5]:
        print(f" - {profile.content[:80]}...")

    out = capsys.readouterr().out
    assert "Recent profiles (last 30 days): 5" in out and "Older profiles: 0" in out

    # -- Cross-Source Profile Correlation
    # Analyze how profiles from different sources relate
    source_profiles = {}
    for profile in all_user_profiles.user_profiles:
        source = profile.source or "unknown"
        if source not in source_profiles:
            source_profiles[source] = []
        source_profiles[source].append(profile)
    print("Profile correlation across sources:")
    for source, profiles in source_profiles.items():
        print(f"\n{source}: {len(profiles)} profiles")
        # Sample content from this source
        sample_content = " ".join([p.content for p in profiles[:3]])
        print(f" Sample content: {sample_content[:150]}...")
        # Search for related profiles in other sources
        for other_source, other_profiles in source_profiles.items():
            if other_source != source and len(other_profiles) > 0:
                # Use first profile content as query
                query_content = profiles[0].content
                related_search = client.search_user_profiles(
                    user_id="customer_alice",
                    query=query_content,
                    source=other_source,
                    threshold=0.7,
                    top_k=2,
                )
                if related_search.user_profiles:
                    print(
                        f" Related in {other_source}: {len(related_search.user_profiles)} profiles"
                    )

    out = capsys.readouterr().out
    assert "onboarding: 2 profiles" in out and "support_chat: 2 profiles" in out
    # the onboarding laptop fact and the support_chat work-setup fact are related
    assert "Related in support_chat: 1 profiles" in out

    # -- Content Recommendation Based on Profiles
    # Use profiles to generate personalized recommendations
    user_profiles = client.search_user_profiles(
        user_id="customer_alice", query="interests preferences hobbies", threshold=0.6
    )
    # Extract interests for recommendation engine
    user_interests = []
    for profile in user_profiles.user_profiles:
        # Simple extraction - in production, use proper NLP
        if "interested in" in profile.content.lower():
            interests = profile.content.lower().split("interested in")[1].split(".")[0]
            user_interests.append(interests.strip())
        if "likes" in profile.content.lower():
            likes = profile.content.lower().split("likes")[1].split(".")[0]
            user_interests.append(likes.strip())
    print(f"Extracted interests for recommendations: {user_interests}")
    # Use interests to search for similar users or content
    for interest in user_interests[:3]:  # Top 3 interests
        similar_profiles = client.search_user_profiles(
            user_id="customer_alice",  # Could search across all users
            query=interest,
            threshold=0.8,
        )
        print(f"Users with similar interest '{interest}': {len(similar_profiles.user_profiles)}")

    out = capsys.readouterr().out
    assert "Extracted interests for recommendations: ['hiking', 'jazz']" in out
    assert "Users with similar interest 'hiking': " in out
    assert "Users with similar interest 'jazz': " in out


# -- the seed's curl examples ------------------------------------------------------------------
# Transcribed from the seed into the repository (the test never reads the seed document).
CURL_EXAMPLES = Path(__file__).resolve().parent / "fixtures" / "reflexio_curl_examples.json"


def curl_examples() -> list[tuple[str, str, dict[str, str], str | None]]:
    """(method, path, headers, body) of every curl command of the seed, in its order."""
    data = json.loads(CURL_EXAMPLES.read_text(encoding="utf-8"))
    return [(e["method"], e["path"], e["headers"], e["body"]) for e in data["examples"]]


def test_every_curl_example_of_the_seed(make_proxy: Any) -> None:
    """Each curl call of the seed, sent as written (method, path, headers, body) with
    ``$REFLEXIO_URL`` / ``$REFLEXIO_API_KEY`` set to the proxy and its key."""
    proxy = make_proxy(models={"extraction": "gpt-4o-mini"})
    _, token = KeyStore(open_database(proxy.settings)).create("acme")
    client = reflexio.ReflexioClient(url_endpoint=proxy.url, api_key=token)
    seed(client, "customer_alice", *ALICE)
    seed(
        client,
        "customer_frank",
        ("outdated_info", "outdated information: deprecated preferences", "x"),
    )
    examples = curl_examples()
    assert len(examples) == 19
    seen: dict[str, int] = {}
    for method, path, headers, body in examples:
        headers = {k: v.replace("$REFLEXIO_API_KEY", token) for k, v in headers.items()}
        assert headers["Authorization"] == f"Bearer {token}"
        r = httpx.request(method, proxy.url + path, headers=headers, content=body, timeout=30)
        data = json.loads(body) if body else {}
        seen[path] = seen.get(path, 0) + 1
        if path == "/api/set_config":  # the seed's body is a placeholder ("...")
            assert r.status_code == 400 and r.json()["error"]["param"] == "..."
            full = httpx.get(proxy.url + "/api/get_config", headers=headers).json()
            r = httpx.request(method, proxy.url + path, headers=headers, json=full)
            assert r.status_code == 200 and r.json()["success"] is True
        elif data.get("profile_id") == "specific_profile_uuid_here":
            assert r.status_code == 404 and r.json()["error"]["param"] == "profile_id"
        elif path == "/api/publish_interaction":
            assert r.status_code == 202 and r.json()["success"] is True, r.text
        else:
            assert r.status_code == 200, (path, r.text)
            answer = r.json()
            if path in ("/api/search_profiles", "/api/get_profiles"):
                assert all(p["user_id"] == data["user_id"] for p in answer["user_profiles"])
            elif path == "/api/profile_change_log":
                assert len(answer["profile_change_logs"]) == len(ALICE) + 1
            elif path == "/api/delete_profile":
                assert answer["success"] is True and answer["message"]
    assert seen == {
        "/api/search_profiles": 8,
        "/api/publish_interaction": 2,
        "/api/profile_change_log": 1,
        "/api/delete_profile": 3,
        "/api/get_config": 2,
        "/api/set_config": 2,
        "/api/get_profiles": 1,
    }
    # what the seed's calls did: two turns queued, frank's outdated profile deleted
    assert client.get_profiles(user_id="customer_frank").user_profiles == []
    found = client.search_user_profiles(
        user_id="customer_alice", query="laptop preferences programming work", threshold=0.7
    )
    assert found.user_profiles  # the first curl search's query finds alice's profile
