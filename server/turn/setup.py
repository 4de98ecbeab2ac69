"""At startup: which turn detection the sessions get by default, and the turn detector behind it.

`--turn-detection` (ServerConfig.turn_detection) names the default policy. Left empty, the default
is semantic when the Smart Turn model is installed and loads, and silence otherwise (said in one log
line). Named explicitly, semantic needs the model: a missing or corrupt file stops the server with
the ModelFileError that names --turn-model and `make install`. Whenever the model loads, it is
there for the sessions that ask for semantic with session.update, whatever the default.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Executor

from hark.protocol import ProtocolError, SessionConfig
from hark.protocol.turn_detection import SemanticTurnDetection, parse_turn_detection_option

from ..config import ServerConfig
from ..models import ModelFileError
from .smart_turn import SmartTurnDetector, create_turn_detector

log = logging.getLogger(__name__)

AUTO = ("", "auto")


class TurnDetectionOptionError(ValueError):
    """--turn-detection holds something that is not a policy."""


def prepare_turn_detection(
    config: ServerConfig, executor: Executor | None = None
) -> tuple[SessionConfig, SmartTurnDetector | None]:
    """The session defaults with their turn_detection settled, and the loaded detector (or None).
    Blocking (loads the model); raises ModelFileError or TurnDetectionOptionError."""
    defaults = config.session_defaults
    option = config.turn_detection.strip()
    detector: SmartTurnDetector | None
    if option.lower() in AUTO:
        try:
            detector = create_turn_detector(config, executor)
        except ModelFileError as exc:
            if isinstance(defaults.turn_detection, SemanticTurnDetection):
                raise  # the config file asked for semantic by name
            log.warning("turn detection: silence only (%s)", exc)
            return defaults, None
        policy = defaults.turn_detection
        if not isinstance(policy, SemanticTurnDetection):
            policy = SemanticTurnDetection()
            defaults = dataclasses.replace(defaults, turn_detection=policy)
        log.info("turn detection: semantic, %s eagerness, by default (%s)", policy.eagerness, detector.name)
        return defaults, detector
    try:
        policy = parse_turn_detection_option(option)
    except ProtocolError as exc:
        message = exc.message.replace("config.turn_detection", "--turn-detection")
        raise TurnDetectionOptionError(f'{message} (or give JSON, e.g. \'{{"type":"semantic"}}\')') from None
    defaults = dataclasses.replace(defaults, turn_detection=policy)
    if isinstance(policy, SemanticTurnDetection):
        return defaults, create_turn_detector(config, executor)  # ModelFileError stops the server
    try:
        detector = create_turn_detector(config, executor)
    except ModelFileError as exc:
        log.info("turn detection: silence (sessions cannot ask for semantic: %s)", exc)
        detector = None
    return defaults, detector
