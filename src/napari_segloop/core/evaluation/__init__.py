"""Scoring a segmentation against ground truth.

* :mod:`.checks` input checks (ground truth, probability maps, regions);
* :mod:`.results` :class:`PixelMetrics`, :class:`ObjectMetrics`, :class:`Evaluation`;
* :mod:`.pixels`, :mod:`.objects` pixel counts, object labelling (2-D or 3-D) and matching;
* :mod:`.planes` the scored planes of a partly predicted stack, and their runs;
* :mod:`.evaluate` :func:`evaluate` and :func:`evaluate_stack`;
* :mod:`.confusion` the TP/FP/FN code image;
* :mod:`.curve` the threshold curve, exact best threshold and Otsu;
* :mod:`.batch` evaluation of files and folders (``segloop evaluate``);
* :mod:`.report` CSV rows.
"""

from napari_segloop.core.evaluation.checks import (
    as_probability,
    check_region,
    check_truth,
    prediction_mask,
    truth_foreground,
)
from napari_segloop.core.evaluation.confusion import (
    CONFUSION_NAMES,
    FN,
    FP,
    TN,
    TP,
    confusion_image,
)
from napari_segloop.core.evaluation.curve import (
    BEST_METRICS,
    DEFAULT_STEPS,
    BestThreshold,
    CurveData,
    ThresholdCurve,
    otsu_threshold,
)
from napari_segloop.core.evaluation.evaluate import evaluate, evaluate_stack
from napari_segloop.core.evaluation.objects import IOU_MATCH, label_objects, match_objects
from napari_segloop.core.evaluation.pixels import pixel_metrics
from napari_segloop.core.evaluation.planes import check_planes, plane_runs, select_planes
from napari_segloop.core.evaluation.report import METRIC_COLUMNS, metrics_csv_text, write_metrics_csv
from napari_segloop.core.evaluation.results import (
    Evaluation,
    ObjectMetrics,
    PixelMetrics,
    StackEvaluation,
)

__all__ = [
    "BEST_METRICS",
    "CONFUSION_NAMES",
    "DEFAULT_STEPS",
    "FN",
    "FP",
    "IOU_MATCH",
    "METRIC_COLUMNS",
    "TN",
    "TP",
    "BestThreshold",
    "CurveData",
    "Evaluation",
    "ObjectMetrics",
    "PixelMetrics",
    "StackEvaluation",
    "ThresholdCurve",
    "as_probability",
    "check_planes",
    "check_region",
    "check_truth",
    "confusion_image",
    "evaluate",
    "evaluate_stack",
    "label_objects",
    "match_objects",
    "metrics_csv_text",
    "otsu_threshold",
    "pixel_metrics",
    "plane_runs",
    "prediction_mask",
    "select_planes",
    "truth_foreground",
    "write_metrics_csv",
]
