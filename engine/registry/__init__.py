"""The SQLite registry (sqlite-utils): the one owner of every SQL statement in the engine.

Files, observations, calibration tables, images, mosaics, products and their events live in
one SQLite file (WAL mode, short IMMEDIATE transactions). Code elsewhere asks and records
through the named methods of :class:`Registry`; states are the enums of
:mod:`engine.states` and change only through :meth:`Registry.transition`.

- :mod:`engine.registry.schema`: tables and migrations (``SCHEMA_VERSION``)
- :mod:`engine.registry.core`: connection, transactions, events, the state machine
- :mod:`engine.registry.files`: incoming files and their grouping into observations
- :mod:`engine.registry.observations`: leases and the driver's questions
- :mod:`engine.registry.products`: images, mosaics, calibration tables, publication
- :mod:`engine.registry.sources`: forced photometry and light-curve statistics
"""

from engine.registry.core import RegistryCore
from engine.registry.files import Attached, FileRecords
from engine.registry.observations import ObservationRecords
from engine.registry.products import ProductRecords
from engine.registry.schema import KEYS, SCHEMA_VERSION
from engine.registry.sources import SourceRecords


class Registry(FileRecords, ObservationRecords, ProductRecords, SourceRecords, RegistryCore):
    """The engine's record. Open one per process; the driver is the only writer."""


__all__ = ["Attached", "KEYS", "Registry", "SCHEMA_VERSION"]
