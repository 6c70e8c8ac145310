"""Faults for `harness run --nemesis ...`: network partitions, process kills
and pauses, clock skew, packet delay/loss, power failures that lose
unsynced writes, wiped disks, and the schedule that
alternates them while the clients work (see `harness.nemesis.schedule` for
how the runner uses it).
"""

from .base import TARGETS, AsyncioClock, Clock, ClusterHandle, Fault, Record
from .clock import ClockSkew
from .disk import PowerFailure, WipeDisk
from .packet import Packet
from .partition import SHAPES, Partition
from .process import Kill, Pause
from .schedule import (
    FAULT_NAMES,
    FaultOptions,
    Nemesis,
    build_faults,
    check_available,
    parse_fault_names,
)

__all__ = [
    "FAULT_NAMES",
    "SHAPES",
    "TARGETS",
    "AsyncioClock",
    "Clock",
    "ClockSkew",
    "ClusterHandle",
    "Fault",
    "FaultOptions",
    "Kill",
    "Nemesis",
    "Packet",
    "Partition",
    "Pause",
    "PowerFailure",
    "Record",
    "WipeDisk",
    "build_faults",
    "check_available",
    "parse_fault_names",
]
