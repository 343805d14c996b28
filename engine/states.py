"""Every state the registry records, as named enums, and the machines that connect them.

The registry stores the enum values (plain strings, so the SQLite file stays readable with
any tool); code compares and assigns only these names, so a typo is an AttributeError, not
a silent new state. Transitions are allowed only along :data:`MACHINES`
(:meth:`engine.registry.Registry.transition` enforces them).
"""

from __future__ import annotations

from enum import StrEnum


class ObsState(StrEnum):
    """An observation (16 subband files at one start time and pointing)."""

    DISCOVERED = "discovered"  # some subband files registered, more may come
    INCOMPLETE = "incomplete"  # short of subbands after discover.incomplete_wait_s
    COMPLETE = "complete"  # all subbands registered: ready to convert
    CONVERTING = "converting"
    CONVERTED = "converted"  # a verified MS in stage
    CALIBRATING = "calibrating"  # holds a calibrator transit: solving
    AWAITING_CALIBRATION = "awaiting_calibration"  # no tables valid at its observation time
    IMAGING = "imaging"
    IMAGED = "imaged"
    MOSAICKED = "mosaicked"  # member of a published mosaic
    FAILED = "failed"  # a step broke (the input was fine): retried by a later run
    QUARANTINED = "quarantined"  # bad input: final until a person fixes the files


class ProductState(StrEnum):
    """A product (image or mosaic) on its way from stage to products."""

    STAGING = "staging"
    VALIDATED = "validated"
    PUBLISHED = "published"
    REJECTED = "rejected"


class MosaicState(StrEnum):
    """A window of consecutive observations and its mosaic."""

    PLANNED = "planned"
    MOSAICKING = "mosaicking"
    MOSAICKED = "mosaicked"
    PUBLISHED = "published"
    FAILED = "failed"


class FileStatus(StrEnum):
    """One incoming subband file (``files.status``)."""

    OK = "ok"  # registered to its observation
    PENDING = "pending"  # still being written: looked at again next scan
    QUARANTINED = "quarantined"  # unusable; the error names the problem
    CONFLICT = "conflict"  # a second file for a subband that already has one


class Check(StrEnum):
    """A product's QA verdict (``products.qa_status``) and pending columns."""

    PENDING = "pending"
    PASS = "pass"
    FAIL = "fail"


class Step(StrEnum):
    """The kinds of Ray task the driver submits (each has its own retry count)."""

    CONVERT = "convert"
    CALIBRATE = "calibrate"
    IMAGE = "image"
    MOSAIC = "mosaic"


# state -> the states it may move to
OBS_MACHINE: dict[ObsState, set[ObsState]] = {
    ObsState.DISCOVERED: {ObsState.COMPLETE, ObsState.INCOMPLETE, ObsState.QUARANTINED},
    ObsState.INCOMPLETE: {ObsState.COMPLETE, ObsState.QUARANTINED},
    ObsState.COMPLETE: {ObsState.CONVERTING, ObsState.QUARANTINED},
    ObsState.CONVERTING: {ObsState.CONVERTED, ObsState.FAILED, ObsState.COMPLETE,
                          ObsState.QUARANTINED},
    ObsState.CONVERTED: {ObsState.CALIBRATING, ObsState.AWAITING_CALIBRATION,
                         ObsState.IMAGING, ObsState.FAILED, ObsState.QUARANTINED},
    ObsState.CALIBRATING: {ObsState.IMAGING, ObsState.AWAITING_CALIBRATION, ObsState.FAILED,
                           ObsState.CONVERTED},
    ObsState.AWAITING_CALIBRATION: {ObsState.IMAGING, ObsState.FAILED},
    ObsState.IMAGING: {ObsState.IMAGED, ObsState.FAILED, ObsState.CONVERTED},
    # reconcile --repair: a published image whose files are missing or changed is made again
    ObsState.IMAGED: {ObsState.MOSAICKED, ObsState.CONVERTED, ObsState.COMPLETE},
    ObsState.MOSAICKED: {ObsState.CONVERTED, ObsState.COMPLETE},
    ObsState.FAILED: {ObsState.COMPLETE, ObsState.CONVERTED},  # taken up by a later run
    ObsState.QUARANTINED: set(),  # a person fixes the files (docs/RELIABILITY.md)
}
PRODUCT_MACHINE: dict[ProductState, set[ProductState]] = {
    ProductState.STAGING: {ProductState.VALIDATED, ProductState.REJECTED},
    ProductState.VALIDATED: {ProductState.PUBLISHED, ProductState.REJECTED},
    ProductState.PUBLISHED: {ProductState.REJECTED},  # reconcile --repair: files broken
    ProductState.REJECTED: {ProductState.STAGING},
}
MOSAIC_MACHINE: dict[MosaicState, set[MosaicState]] = {
    MosaicState.PLANNED: {MosaicState.MOSAICKING, MosaicState.FAILED},
    MosaicState.MOSAICKING: {MosaicState.MOSAICKED, MosaicState.FAILED, MosaicState.PLANNED},
    # reconcile --repair: a made mosaic whose files are broken is planned again
    MosaicState.MOSAICKED: {MosaicState.PUBLISHED, MosaicState.FAILED, MosaicState.PLANNED},
    MosaicState.PUBLISHED: {MosaicState.PLANNED},
    MosaicState.FAILED: {MosaicState.PLANNED},
}
MACHINES = {"observations": OBS_MACHINE, "products": PRODUCT_MACHINE,
            "mosaics": MOSAIC_MACHINE}

# observations with a Ray task in flight, and where a restarted driver takes each back to
IN_FLIGHT = {ObsState.CONVERTING: ObsState.COMPLETE, ObsState.CALIBRATING: ObsState.CONVERTED,
             ObsState.IMAGING: ObsState.CONVERTED}
# an observation's image exists and was recorded (a mosaic may use it)
HAS_IMAGE = (ObsState.IMAGED, ObsState.MOSAICKED)
# final fates that end a run of consecutive observations for mosaic planning
GAP = (ObsState.FAILED, ObsState.QUARANTINED, ObsState.INCOMPLETE)
