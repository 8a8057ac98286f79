"""Keras callbacks of keras_mtl."""

from keras_mtl.callbacks.backup_and_restore import BackupAndRestore
from keras_mtl.callbacks.gate_load import GateLoadMonitor
from keras_mtl.callbacks.gradient_conflict import GradientConflictMonitor
from keras_mtl.callbacks.loss_curve import TaskLossCurve
from keras_mtl.callbacks.terminate_on_nan import NonFiniteLossError, TerminateOnNonFiniteLoss
from keras_mtl.callbacks.weight_trace import TaskWeightTrace
