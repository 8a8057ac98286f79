"""The synthetic many-attribute data set (issue 20)."""

import numpy as np

from keras_mtl.data import attributes


def test_examples_are_reproducible_and_the_attributes_are_in_the_pixels():
    ds = attributes.make_dataset(64, num_attributes=6, image_size=32, batch_size=64)
    images, targets = next(iter(ds))
    again, same = next(iter(attributes.make_dataset(64, 6, 32, 64)))
    np.testing.assert_array_equal(images.numpy(), again.numpy())
    assert sorted(targets) == attributes.task_names(6)
    labels = np.stack([targets[name].numpy() for name in attributes.task_names(6)], 1)  # (N, K)
    assert set(np.unique(labels)) == {0, 1}
    # Projecting the image on an attribute's pattern reads that attribute back.
    patterns = attributes.patterns(6, 32).numpy().reshape(6, -1)  # (K, P)
    centred = images.numpy().reshape(64, -1).astype("float32") - 128.0  # (N, P)
    scores = centred @ patterns.T  # (N, K)
    accuracy = np.mean((scores > 0) == (labels > 0))
    assert accuracy > 0.8
    other = next(iter(attributes.make_dataset(64, 6, 32, 64, seed=1)))[0]
    assert not np.array_equal(other.numpy(), images.numpy())


def test_tasks_are_binary_classifications():
    tasks = attributes.make_tasks(40)
    assert len(tasks) == 40 and tasks[-1].name == "attr_39"
