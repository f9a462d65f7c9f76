"""Handoff triggers: asking for a person, frustration, abstentions, too many turns, priorities."""

from __future__ import annotations

import pytest

from support_bot import handoff
from support_bot.core.config import Settings
from support_bot.handoff.sentiment import score

ASKS = [
    "talk to a human",
    "I want to talk to a real person please",
    "real person please",
    "Can I speak to an agent?",
    "operator",
    "HUMAN!!!",
    "agent please",
    "I want a representative",
    "I'd like to speak with someone from your support team",
    "Please connect me with a live agent.",
    "can you transfer me to a human",
    "put me through to customer service",
    "Is there a real person I can talk to?",
    "is there anyone i can talk to",
    "I don't want to talk to a bot, give me a human",
    "stop the bot please",
    "I need a manager now",
    "Why can't I just talk to somebody?",
    "escalate this to your supervisor",
    "Can I get an actual person on the chat?",
    # other languages
    "Ich möchte mit einem Mitarbeiter sprechen",
    "Verbinden Sie mich mit einem Menschen",
    "Je voudrais parler à un conseiller",
    "je veux un humain",
    "Quiero hablar con una persona",
    "necesito un agente",
    "Vorrei parlare con un operatore",
    "Kan ik een medewerker spreken?",
    "Quero falar com um atendente",
]

NOT_ASKS = [
    "is a person allowed to return two items?",
    "Can a person under 18 buy an e-bike?",
    "How many people can ride the tandem?",
    "My agent will pick up the order on Friday",
    "I spoke to an agent yesterday, when does my refund arrive?",
    "I want the agent discount code",
    "Do your representatives speak German?",
    "Is there a person limit per order?",
    "Can someone else pick up my order for me?",
    "I don't need to talk to a human, just tell me the price",
    "What is your return policy?",
    "Is the operator of the website based in the EU?",
    "I need someone to sign for the delivery",
    "Which agent handled my case?",
]


@pytest.mark.parametrize("text", ASKS)
def test_asking_for_a_person_is_recognized(text):
    settings = Settings()
    assert handoff.asks_for_person(text, settings)
    trigger = handoff.message_trigger(settings, text=text, previous_customer_texts=[], bot_turns=0)
    assert trigger is not None and trigger.reason == "request" and trigger.detail


@pytest.mark.parametrize("text", NOT_ASKS)
def test_questions_that_merely_mention_people_are_not_requests(text):
    assert handoff.asks_for_person(text, Settings()) is None


def test_request_languages_and_phrases_come_from_settings():
    german = "Ich möchte mit einem Mitarbeiter sprechen"
    english_only = Settings(handoff={"request_languages": ["en"]})
    assert handoff.asks_for_person(german, english_only) is None
    custom = Settings(handoff={"request_phrases": ["beam me to the helpdesk crew"]})
    assert handoff.asks_for_person("Please beam me to the helpdesk crew!", custom) == "beam me to the helpdesk crew"
    assert handoff.asks_for_person("Please beam me to the helpdesk crew!", Settings()) is None


def test_request_trigger_can_be_turned_off():
    settings = Settings(handoff={"request_enabled": False})
    assert handoff.message_trigger(settings, text="talk to a human", previous_customer_texts=[], bot_turns=0) is None


def test_sentiment_reads_intensity_caps_punctuation_and_negation():
    assert score("What is your return policy?").score == 0.0
    assert score("Thanks, that's great!").score > 0.5
    plain, loud = score("This is useless"), score("This is USELESS!!!")
    assert plain.score < 0 and loud.score < plain.score
    assert "caps:USELESS" in loud.signals
    assert score("this is really annoying").score < score("this is annoying").score
    assert score("this is slightly annoying").score > score("this is annoying").score
    assert score("not bad").score > 0 > score("not good").score
    assert score("The product is good but the delivery was awful").score < 0
    assert score("Hello??? Anyone???").score < 0
    assert "shouting" in score("WHY IS NOTHING WORKING FOR ME").signals


FRUSTRATED = [
    "This is ridiculous, I've asked three times!",
    "You're USELESS!!!",
    "I'm fed up with this waste of time",
    "what a fucking joke, nothing works",
    "I am really really disappointed and angry",
    "WHY IS NOTHING WORKING",
]
CALM = [
    "My bike arrived broken, how do I return it?",
    "I have a problem with my order",
    "The weather is terrible, do you deliver in the rain?",
    "Where is my package? It's late.",
    "Thanks, that was helpful",
]


@pytest.mark.parametrize("text", FRUSTRATED)
def test_frustration_hands_off(text):
    settings = Settings()
    trigger = handoff.message_trigger(settings, text=text, previous_customer_texts=[], bot_turns=1)
    assert trigger is not None and trigger.reason == "sentiment" and trigger.detail.startswith("sentiment -")


@pytest.mark.parametrize("text", CALM)
def test_ordinary_complaints_do_not_hand_off(text):
    assert handoff.message_trigger(Settings(), text=text, previous_customer_texts=[], bot_turns=1) is None


def test_sustained_mild_frustration_hands_off_and_the_threshold_is_configurable():
    settings = Settings()
    first, second = "still not working", "this is so annoying"
    assert handoff.frustration(second, [], settings) is None
    assert handoff.frustration(second, ["What are your opening hours?"], settings) is None
    detail = handoff.frustration(second, [first], settings)
    assert detail and "2 unhappy messages in a row" in detail
    strict = Settings(handoff={"sentiment_threshold": 0.3})
    assert handoff.frustration(second, [], strict)
    off = Settings(handoff={"sentiment_enabled": False})
    assert handoff.message_trigger(off, text="You're USELESS!!!", previous_customer_texts=[], bot_turns=1) is None


def test_too_many_bot_turns_hands_off():
    settings = Settings(handoff={"max_bot_turns": 3})
    ask = "And what about the warranty?"
    assert handoff.message_trigger(settings, text=ask, previous_customer_texts=[], bot_turns=2) is None
    trigger = handoff.message_trigger(settings, text=ask, previous_customer_texts=[], bot_turns=3)
    assert trigger == handoff.Trigger("max_turns", "3 bot answers without a resolution")
    off = Settings(handoff={"max_bot_turns": 3, "max_turns_enabled": False})
    assert handoff.message_trigger(off, text=ask, previous_customer_texts=[], bot_turns=30) is None


def test_abstain_trigger_counts_the_streak():
    settings = Settings()
    assert handoff.abstain_trigger(settings, abstain_streak=0) is None
    assert handoff.abstain_trigger(settings, abstain_streak=1).reason == "abstain"
    three = Settings(handoff={"abstain_streak": 3})
    assert handoff.abstain_trigger(three, abstain_streak=1) is None
    assert handoff.abstain_trigger(three, abstain_streak=2) is not None
    assert handoff.abstain_trigger(Settings(handoff={"abstain_enabled": False}), abstain_streak=5) is None


def test_safety_trigger_and_priorities():
    settings = Settings()
    assert handoff.safety_trigger(settings, category="self_harm") == handoff.Trigger("safety", "self_harm")
    assert handoff.safety_trigger(Settings(handoff={"safety_enabled": False}), category="self_harm") is None
    assert handoff.priority_for(settings, "safety", "self_harm") == 50
    assert handoff.priority_for(settings, "safety", "legal_threat") == 30
    assert handoff.priority_for(settings, "sentiment") > handoff.priority_for(settings, "request")
    assert handoff.priority_for(settings, "unknown") == 0
