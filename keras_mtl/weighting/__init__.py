"""Task weightings: how the per-task losses or gradients become one update.

`get(identifier)` accepts a registered name (`names()` lists them), a
`{task: weight}` dict (static weights), a `{"class_name", "config"}` dict,
a class, or an instance.

Example:

>>> keras_mtl.weighting.get("uncertainty")
<UncertaintyWeighting ...>
>>> keras_mtl.weighting.get({"species": 1.0, "trimap": 0.5})
<StaticWeighting ...>
"""

from keras_mtl.registry import Registry
from keras_mtl.weighting.dwa import DynamicWeightAverage
from keras_mtl.weighting.equal import EqualWeighting
from keras_mtl.weighting.famo import FastAdaptiveMultitaskOptimization
from keras_mtl.weighting.gls import GeometricLossStrategy
from keras_mtl.weighting.go4align import GO4Align
from keras_mtl.weighting.imtl_l import IMTLL
from keras_mtl.weighting.log_losses import LogLossWeighting
from keras_mtl.weighting.pbi import PenaltyBoundaryIntersection
from keras_mtl.weighting.rlw import RandomLossWeighting
from keras_mtl.weighting.static import StaticWeighting
from keras_mtl.weighting.stch import SmoothTchebycheff
from keras_mtl.weighting.uncertainty import UncertaintyWeighting
from keras_mtl.weighting.weighting import GradientWeighting, LossWeighting, Weighting
# Gradient-based weightings.
from keras_mtl.weighting.adatask import AdaTask
from keras_mtl.weighting.aligned_mtl import AlignedMTL
from keras_mtl.weighting.cagrad import CAGrad
from keras_mtl.weighting.auto import AutoWeighting
from keras_mtl.weighting.calibrated import CalibratedGradientBalancing
from keras_mtl.weighting.calibrated_pcgrad import CalibratedPCGrad
from keras_mtl.weighting.conflict_free import ConFIG
from keras_mtl.weighting.cr_mogm import CRMOGM
from keras_mtl.weighting.db_mtl import DualBalancing
from keras_mtl.weighting.dual_proj import DualProj
from keras_mtl.weighting.excess_mtl import ExcessMTL
from keras_mtl.weighting.fairgrad import FairGrad
from keras_mtl.weighting.graddrop import GradDrop
from keras_mtl.weighting.gradnorm import GradNorm
from keras_mtl.weighting.gradvac import GradVac
from keras_mtl.weighting.imtl import IMTL
from keras_mtl.weighting.krum import Krum
from keras_mtl.weighting.mgda import MGDA
from keras_mtl.weighting.moco import MoCo
from keras_mtl.weighting.modo import MoDo
from keras_mtl.weighting.nash_mtl import NashMTL
from keras_mtl.weighting.pcgrad import PCGrad
from keras_mtl.weighting.sdmgrad import SDMGrad
from keras_mtl.weighting.trimmed_mean import TrimmedMean
from keras_mtl.weighting.upgrad import UPGrad

WEIGHTINGS = Registry("weighting", base=Weighting)
WEIGHTINGS.register("equal")(EqualWeighting)
WEIGHTINGS.register("static")(StaticWeighting)
WEIGHTINGS.register("uncertainty")(UncertaintyWeighting)
WEIGHTINGS.register("dwa")(DynamicWeightAverage)
WEIGHTINGS.register("rlw")(RandomLossWeighting)
WEIGHTINGS.register("gls")(GeometricLossStrategy)
WEIGHTINGS.register("famo")(FastAdaptiveMultitaskOptimization)
WEIGHTINGS.register("log_losses")(LogLossWeighting)
WEIGHTINGS.register("stch")(SmoothTchebycheff)
WEIGHTINGS.register("imtl_l")(IMTLL)
WEIGHTINGS.register("pbi")(PenaltyBoundaryIntersection)
WEIGHTINGS.register("go4align")(GO4Align)

WEIGHTINGS.register("db_mtl")(DualBalancing)
WEIGHTINGS.register("gradnorm")(GradNorm)
WEIGHTINGS.register("mgda")(MGDA)
WEIGHTINGS.register("pcgrad")(PCGrad)
WEIGHTINGS.register("graddrop")(GradDrop)
WEIGHTINGS.register("imtl")(IMTL)
WEIGHTINGS.register("gradvac")(GradVac)
WEIGHTINGS.register("cagrad")(CAGrad)
WEIGHTINGS.register("nash_mtl")(NashMTL)
WEIGHTINGS.register("aligned_mtl")(AlignedMTL)
WEIGHTINGS.register("upgrad")(UPGrad)
WEIGHTINGS.register("calibrated")(CalibratedGradientBalancing)
WEIGHTINGS.register("auto")(AutoWeighting)
WEIGHTINGS.register("calibrated_pcgrad")(CalibratedPCGrad)
WEIGHTINGS.register("adatask")(AdaTask)
WEIGHTINGS.register("config")(ConFIG)
WEIGHTINGS.register("dualproj")(DualProj)
WEIGHTINGS.register("fairgrad")(FairGrad)
WEIGHTINGS.register("krum")(Krum)
WEIGHTINGS.register("trimmed_mean")(TrimmedMean)
WEIGHTINGS.register("moco")(MoCo)
WEIGHTINGS.register("cr_mogm")(CRMOGM)
WEIGHTINGS.register("excess_mtl")(ExcessMTL)
WEIGHTINGS.register("modo")(MoDo)
WEIGHTINGS.register("sdmgrad")(SDMGrad)


def names():
    """Registered weighting names."""
    return WEIGHTINGS.names()


def get(identifier, **kwargs):
    """Returns a `Weighting` for `identifier` (see the module docstring)."""
    if isinstance(identifier, dict) and "class_name" not in identifier:
        return StaticWeighting(identifier)
    return WEIGHTINGS.get(identifier, **kwargs)


__all__ = [
    "EqualWeighting", "GradientWeighting", "LossWeighting", "StaticWeighting",
    "UncertaintyWeighting", "WEIGHTINGS", "Weighting", "get", "names",
    "DynamicWeightAverage", "FastAdaptiveMultitaskOptimization", "GeometricLossStrategy",
    "LogLossWeighting", "RandomLossWeighting", "SmoothTchebycheff",
    "GO4Align", "IMTLL", "PenaltyBoundaryIntersection",
    "DualBalancing",
    "AdaTask", "AlignedMTL", "AutoWeighting", "CAGrad", "CalibratedGradientBalancing", "CalibratedPCGrad",
    "GradDrop", "GradNorm", "GradVac", "IMTL", "MGDA", "NashMTL",
    "PCGrad", "UPGrad",
    "ConFIG", "CRMOGM", "DualProj", "ExcessMTL", "FairGrad", "Krum", "MoCo", "MoDo", "SDMGrad",
    "TrimmedMean",
]
