"""What the HTTP routes need to know about POSTed WebRTC sessions, without importing aiortc (an extra)."""

from __future__ import annotations

from enum import StrEnum


class PostedKind(StrEnum):
    """The route a posted session came from; its DELETE location lives under that route."""

    OFFER = "offer"  # POST /v1/webrtc/offer: events on a data channel the client opens
    WHIP = "whip"  # POST /v1/whip: audio in, audio out, no events


class AdmissionRefused(Exception):
    """No slot for one more session; the message says why (server_busy)."""


class OfferRefused(Exception):
    """aiortc could not answer the offer (malformed SDP, no common codec); the message says why."""
