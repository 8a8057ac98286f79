"""GateLoadMonitor: the mixture-of-experts gates' loads in the training logs."""

import keras

from keras_mtl.architectures.gate_loads import gate_loads


class GateLoadMonitor(keras.callbacks.Callback):
    """Logs each task's mean gate weight per expert at the end of every epoch.

    For the mixture-of-experts architectures (`mmoe`, `cgc`, `ple`,
    `dselect_k`): at each epoch's end it runs
    `keras_mtl.architectures.gate_loads` on the held `images` (one forward
    pass of the trunk and the gates in inference mode; the model is not
    changed) and adds `gate_load/<task>/<e>` for every task and expert e to
    the logs, so `History` and a `keras.callbacks.TensorBoard` placed after
    it get them. For `cgc` and `ple` the experts are numbered shared first,
    then the task's own.

    Args:
        images: `(N, H, W, 3)` images to measure on (a few batches' worth).
        batch_size: batch size of the measurement.

    Example:

    ```python
    history = model.fit(train, epochs=5, callbacks=[GateLoadMonitor(val_images[:64])])
    history.history["gate_load/mask/0"]  # task mask's mean weight on expert 0, per epoch
    ```
    """

    def __init__(self, images, batch_size=32):
        super().__init__()
        self.images = images
        self.batch_size = int(batch_size)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for task, load in gate_loads(self.model, self.images, self.batch_size).items():
            for expert, value in enumerate(load):
                logs[f"gate_load/{task}/{expert}"] = float(value)
