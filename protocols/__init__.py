"""Downstream protocols as data: how each dataset is split and subset and how its head is trained.

Built-in protocols (`published`, `corrected`) are TOML files in this package; a user's file is read by path
(`--protocol FILE`). A leaf package: it imports nothing first-party, so extract, evaluate and the study runner
can all read the same protocol.
"""
from adaptor_vlp.protocols.loader import BUILTIN_PROTOCOLS, PUBLISHED_PROTOCOL, load_protocol, parse_protocol
from adaptor_vlp.protocols.manifest_record import MANIFEST_OPTION, ProtocolRecord
from adaptor_vlp.protocols.records import (
    Fault,
    HeadArchitecture,
    HeadSpec,
    HeadTask,
    Metric,
    Optimiser,
    Protocol,
    ProtocolError,
    Schedule,
    Selection,
    SplitRule,
    SplitSpec,
    SplitUnit,
    SubsetRule,
    SubsetSpec,
    TaskProtocol,
    TrainingBalance,
    TrainingRecipe,
)

__all__ = [
    "BUILTIN_PROTOCOLS",
    "Fault",
    "HeadArchitecture",
    "HeadSpec",
    "HeadTask",
    "MANIFEST_OPTION",
    "Metric",
    "Optimiser",
    "PUBLISHED_PROTOCOL",
    "Protocol",
    "ProtocolError",
    "ProtocolRecord",
    "Schedule",
    "Selection",
    "SplitRule",
    "SplitSpec",
    "SplitUnit",
    "SubsetRule",
    "SubsetSpec",
    "TaskProtocol",
    "TrainingBalance",
    "TrainingRecipe",
    "load_protocol",
    "parse_protocol",
]
