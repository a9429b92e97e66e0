"""Per-topic token buckets for MQTT intake: a publisher that floods one topic is dropped there
without starving the others. Bounded: the least recently seen topics are forgotten."""

from __future__ import annotations

from collections import OrderedDict


class TopicRateLimit:
    """``burst`` messages on a topic at once, then ``rate_per_s``; at most ``max_topics`` tracked."""

    def __init__(self, burst: float, rate_per_s: float, max_topics: int) -> None:
        self.burst = burst
        self.rate_per_s = rate_per_s
        self.max_topics = max_topics
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # topic -> (tokens, at_s)

    def allow(self, topic: str, now_s: float) -> bool:
        """Take a token for one message on ``topic`` at ``now_s``; False: drop it."""
        tokens, at_s = self._buckets.pop(topic, (self.burst, now_s))
        tokens = min(self.burst, tokens + max(0.0, now_s - at_s) * self.rate_per_s)
        allowed = tokens >= 1.0
        self._buckets[topic] = (tokens - 1.0 if allowed else tokens, now_s)
        if len(self._buckets) > self.max_topics:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
