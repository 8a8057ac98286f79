"""Part 6: SavedModel serving latency, and the share of it spent decoding.

The multi-task model (all shapes tasks, untrained: decoding has static
shapes, so its cost does not depend on the weights) is exported with
`model.export(path)` and reloaded with `tf.saved_model.load`; its
`serving_default` signature (float32 pixels -> decoded outputs) is timed on
batches of 1 and 8 shapes images. A second SavedModel, written with
`keras.export.ExportArchive` from the same model, serves
- `raw`: the model's call without decoding (logits, box regressions);
- `raw_detection_decoded`: the raw outputs plus the detection task's
  decoding only (peaks, class-aware NMS, top-K), when there is detection.
All signatures are reloaded and timed interleaved in the same process, so

    decoding share = (t(serving_default) - t(raw)) / t(serving_default)
    detection decoding + NMS share = (t(raw_detection_decoded) - t(raw)) / t(serving_default)

Latencies are the median of blocks of calls, each call waiting for its
outputs.
"""

import os
import tempfile

from benchmarks import common, timing


def _export_raw(model, path, detection):
    import keras
    import tensorflow as tf

    spec = [tf.TensorSpec((None, *model.image_shape), tf.float32, name="images")]

    def raw(images):
        return model(images, training=False)

    def raw_detection_decoded(images):
        outputs = dict(model(images, training=False))
        decoded = detection.decode(outputs.pop(detection.name))
        return {**outputs, **decoded}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("raw", raw, input_signature=spec)
    if detection is not None:
        archive.add_endpoint("raw_detection_decoded", raw_detection_decoded, input_signature=spec)
    archive.write_out(path, verbose=False)


def _timed_call(signature, images):
    import tensorflow as tf

    def call():
        outputs = signature(images=images)
        for value in tf.nest.flatten(outputs):
            value.numpy()

    return call


def run(settings):
    import tensorflow as tf

    common.reset()
    tasks = common.shapes_tasks()
    keys = [task.name for task in tasks]
    detection = next((t for t in tasks if type(t).__name__ == "Detection"), None)
    common.progress(f"part 6: SavedModel serving, tasks {keys}")
    model = common.build_model(settings, tasks)
    batch = common.shapes_batch(common.Settings(**{**settings.__dict__, "batch_size": 8}), keys)
    images = batch[0]

    with tempfile.TemporaryDirectory(prefix="keras_mtl_bench_") as tmp:
        serve_path, raw_path = os.path.join(tmp, "serve"), os.path.join(tmp, "raw")
        model.export(serve_path, verbose=False)
        _export_raw(model, raw_path, detection)
        served = tf.saved_model.load(serve_path).signatures["serving_default"]
        raw_loaded = tf.saved_model.load(raw_path)
        endpoints = {"serving_default": served, "raw": raw_loaded.raw}
        if detection is not None:
            endpoints["raw_detection_decoded"] = raw_loaded.raw_detection_decoded

        rows, data = [], {"tasks": keys, "latency_ms": {}, "block_times_s": {}}
        for batch_size in (1, 8):
            x = images[:batch_size]
            fns = {name: _timed_call(fn, x) for name, fn in endpoints.items()}
            first = {name: timing.time_first_call(fn) for name, fn in fns.items()}
            calls = 10 * settings.steps if batch_size == 1 else 3 * settings.steps  # cheap calls
            repeats = 3 * settings.repeats  # calls take milliseconds: sample more
            times = timing.interleaved_times(fns, settings.warmup + 2, repeats, calls)
            medians = {name: timing.median(t) for name, t in times.items()}
            serve = medians["serving_default"]
            share = timing.median(
                (s - r) / s for s, r in zip(times["serving_default"], times["raw"]))
            rows.append(common.Row(
                "6", f"export.latency_b{batch_size}_ms",
                f"SavedModel `serving_default` latency, batch {batch_size}", 1000 * serve, "ms",
                note=f"{batch_size / serve:,.0f} img/s; raw forward {1000 * medians['raw']:.2f} ms"))
            rows.append(common.Row(
                "6", f"export.decode_share_b{batch_size}",
                f"Decoding share of serving, batch {batch_size}", 100 * share, "%",
                note="(serve − raw forward) / serve"))
            entry = {"serve_ms": 1000 * serve, "raw_ms": 1000 * medians["raw"],
                     "decode_share": share, "first_call_s": first}
            if detection is not None:
                nms_share = timing.median(
                    (d - r) / s for s, r, d in zip(times["serving_default"], times["raw"],
                                                   times["raw_detection_decoded"]))
                rows.append(common.Row(
                    "6", f"export.detection_decode_share_b{batch_size}",
                    f"Detection decoding + NMS share of serving, batch {batch_size}",
                    100 * nms_share, "%",
                    note=f"top-{detection.pre_nms_topk} peaks, "
                         f"{detection.max_detections} detections"))
                entry["detection_decode_share"] = nms_share
            data["latency_ms"][f"batch_{batch_size}"] = entry
            data["block_times_s"][f"batch_{batch_size}"] = times
    return common.PartResult(rows, data)
