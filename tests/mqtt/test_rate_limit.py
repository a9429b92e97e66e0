"""Per-topic token buckets shared by the DR and session intakes."""

from __future__ import annotations

from evdlm.mqtt.rate_limit import TopicRateLimit


def test_a_burst_then_the_rate_per_topic_and_other_topics_unaffected() -> None:
    limit = TopicRateLimit(burst=3, rate_per_s=1.0, max_topics=10)
    assert [limit.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b", 0.0)  # another topic has its own bucket
    assert not limit.allow("a", 0.5)  # half a token refilled
    assert limit.allow("a", 1.5)
    assert [limit.allow("a", 100.0) for _ in range(4)] == [True, True, True, False]  # refills to the burst only


def test_a_clock_going_back_refills_nothing_and_the_oldest_topics_are_forgotten() -> None:
    limit = TopicRateLimit(burst=1, rate_per_s=1.0, max_topics=2)
    assert limit.allow("a", 10.0) and not limit.allow("a", 5.0)
    limit.allow("b", 10.0)
    limit.allow("c", 10.0)
    assert len(limit) == 2  # "a" forgotten: it starts again with a full bucket
    assert limit.allow("a", 10.0)
