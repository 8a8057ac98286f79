"""Evaluation over whole validation sets: COCO-style box mAP (pycocotools), per-task
metrics (`evaluate_tasks`), delta-m and the single-task comparison (`compare`),
efficiency figures (parameters, FLOPs, images/s), and the multi-seed leaderboard of
methods against single-task baselines (`run_leaderboard`).

Example (`model` a trained detection model; evaluating it takes seconds):

```python
from keras_mtl.evaluation import evaluate_detection
val = keras_mtl.data.shapes.make_dataset(500, seed=1)
evaluate_detection(model, val, "objects")["map50"]
```
"""

from keras_mtl.evaluation.coco import DetectionMAPCallback, coco_map, evaluate_detection
from keras_mtl.evaluation.coco import predict_detections
from keras_mtl.evaluation.compare import Comparison, RunResult, compare, evaluate_tasks
from keras_mtl.evaluation.compare import train_and_evaluate
from keras_mtl.evaluation.delta_m import delta_m, delta_m_per_task
from keras_mtl.evaluation.efficiency import count_params, efficiency_report, flops_per_image
from keras_mtl.evaluation.efficiency import images_per_second
from keras_mtl.evaluation.leaderboard import (Leaderboard, LeaderboardData, leaderboard_from_file,
                                              run_leaderboard, write_report)

__all__ = [
    "Comparison", "DetectionMAPCallback", "RunResult", "coco_map", "compare", "count_params",
    "delta_m", "delta_m_per_task", "efficiency_report", "evaluate_detection", "evaluate_tasks",
    "flops_per_image", "images_per_second", "predict_detections", "train_and_evaluate",
    "Leaderboard", "LeaderboardData", "leaderboard_from_file", "run_leaderboard", "write_report",
]
