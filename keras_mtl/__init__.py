"""keras_mtl: one Keras model, several vision tasks.

Example:

>>> import keras_mtl as mtl
>>> model = mtl.build_mtl(
...     [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)],
...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
...     weighting="uncertainty")
>>> model.task_names
['label', 'mask']

Training it (an epoch on the synthetic shapes data):

```python
model.compile(optimizer="adam", jit_compile=True)
model.fit(mtl.data.shapes.make_dataset(256, image_size=32, tasks=["label", "mask"]),
          epochs=1)
```
"""

__version__ = "0.1.0"

from keras_mtl.quiet import quiet_tensorflow  # first: before anything imports TensorFlow

quiet_tensorflow()

from keras_mtl import (architectures, callbacks, data, distribute, evaluation,  # noqa: E402
                       plotting, tasks, training, trunks, weighting)
from keras_mtl.builders import build_mtl, build_single_task  # noqa: E402
from keras_mtl.model import MultiTaskModel  # noqa: E402

__all__ = [
    "MultiTaskModel", "architectures", "build_mtl", "build_single_task", "callbacks", "data",
    "distribute", "evaluation", "plotting", "tasks", "training", "trunks", "weighting",
]
