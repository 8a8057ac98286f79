"""Reading a user's image, mask and label files, with errors that name the file.

Every problem found in a user's data raises `DataError` (a `ValueError`)
whose message names the file and says what is wrong with it, so that a
bad file among thousands is found without a debugger.

Example:

```python
image = files.read_image("photo.jpg")                           # (H, W, 3) uint8
mask = files.read_mask("photo_mask.png", image.shape[:2])       # (H, W) uint8
columns, rows = files.read_labels_csv("labels.csv")             # ["campus"], {"photo.jpg": ...}
```
"""

import csv
import os

import numpy as np

FILE_COLUMNS = ("file_name", "filename", "file", "image")  # accepted CSV key columns
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DataError(ValueError):
    """Bad data in a user's files; the message names the file and the problem."""


def _first_line(error):
    text = str(getattr(error, "message", error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_bytes(path, what):
    if not os.path.isfile(path):
        raise DataError(f"{what} {path!r} does not exist.")
    with open(path, "rb") as file:
        data = file.read()
    if not data:
        raise DataError(f"{what} {path!r} is empty (0 bytes).")
    return data


def read_image(path):
    """Decodes a PNG, JPEG, GIF or BMP file to RGB.

    Grey and RGBA images become RGB; a 16-bit PNG is scaled to 8 bits.

    Args:
        path: the image file.

    Returns:
        An `(H, W, 3)` uint8 numpy array.

    Raises:
        DataError: the file is missing, empty, corrupt or not an image.

    Example:

    >>> from keras_mtl.data import samples
    >>> read_image(samples.pennfudan_coco("images", "PennPed00001.jpg")).shape
    (106, 160, 3)
    """
    import tensorflow as tf

    data = _read_bytes(path, "Image")
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)  # (H, W, 3)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        raise DataError(f"Cannot read image {path!r}: it is corrupt or not a PNG, JPEG, GIF "
                        f"or BMP file ({_first_line(error)}).") from error
    return image.numpy()


def read_mask(path, shape=None, image_path=None):
    """Decodes a mask PNG of class ids (one channel, or equal RGB channels).

    Args:
        path: the mask file (PNG, 8 or 16 bits).
        shape: `(H, W)` the mask must have, usually its image's size.
        image_path: the image the mask belongs to, named in size errors.

    Returns:
        An `(H, W)` numpy array of class ids (uint8, or uint16 for 16-bit PNGs).

    Raises:
        DataError: the file is missing, corrupt, a colour image (class ids
            must be grey values, not a palette's colours), or of the wrong size.

    Example:

    >>> _ = tf.io.write_file("mask.png", tf.io.encode_png(np.ones((4, 6, 1), "uint8")))
    >>> read_mask("mask.png", shape=(4, 6)).shape
    (4, 6)
    """
    import tensorflow as tf

    data = _read_bytes(path, "Mask")
    if data[:8] != _PNG_SIGNATURE:
        raise DataError(f"Mask {path!r} is not a PNG file (masks must be lossless PNGs).")
    dtype = tf.uint16 if len(data) > 24 and data[24] == 16 else tf.uint8  # IHDR bit depth
    try:
        values = tf.io.decode_png(data, channels=0, dtype=dtype).numpy()  # (H, W, C)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        raise DataError(f"Cannot read mask {path!r}: the PNG is corrupt "
                        f"({_first_line(error)}).") from error
    if values.shape[-1] in (2, 4):  # grey + alpha, RGBA: drop the alpha channel
        values = values[..., :-1]
    if values.shape[-1] == 3:
        if not (np.array_equal(values[..., 0], values[..., 1])
                and np.array_equal(values[..., 0], values[..., 2])):
            raise DataError(f"Mask {path!r} is a colour image; save the class ids as a "
                            "single-channel (grey) PNG, 0 = background, 255 = unlabelled.")
    values = values[..., 0]  # (H, W)
    if shape is not None and tuple(values.shape) != tuple(shape[:2]):
        owner = f" but its image {image_path!r} is" if image_path else ", expected"
        raise DataError(f"Mask {path!r} is {values.shape[1]}x{values.shape[0]} pixels (WxH)"
                        f"{owner} {shape[1]}x{shape[0]}.")
    return values


def read_labels_csv(path):
    """Reads a CSV of image-level labels: a file-name column and label columns.

    The first row names the columns. The file column is the first of
    `FILE_COLUMNS` present (`file_name`, `filename`, `file`, `image`); every
    other column is one label (its header names the classification task).
    An empty cell means "unlabelled".

    Args:
        path: the CSV file.

    Returns:
        `(columns, rows)`: the label column names, and a dict mapping each
        file name (as written) to `{column: value string or None}`.

    Raises:
        DataError: the file is missing or empty, has no file column or no
            label column, a row has the wrong number of cells, or a file is
            listed twice.

    Example:

    >>> from keras_mtl.data import samples
    >>> columns, rows = read_labels_csv(samples.pennfudan_coco("labels.csv"))
    >>> columns, rows["FudanPed00001.jpg"]
    (['campus'], {'campus': 'FudanPed'})
    """
    text = _read_bytes(path, "Labels CSV").decode("utf-8-sig")
    reader = csv.reader(text.splitlines())
    header = [cell.strip() for cell in next(reader, [])]
    if not any(header):
        raise DataError(f"Labels CSV {path!r} has no header row.")
    keys = [name for name in FILE_COLUMNS if name in header]
    if not keys:
        raise DataError(f"Labels CSV {path!r} has no file column; name one of {FILE_COLUMNS} "
                        f"in the header, found {header}.")
    key = header.index(keys[0])
    columns = [name for i, name in enumerate(header) if i != key]
    if not columns:
        raise DataError(f"Labels CSV {path!r} has no label column besides {header[key]!r}.")
    rows = {}
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"Labels CSV {path!r}, line {line}: {len(row)} cells, the header "
                            f"has {len(header)}.")
        name = row[key].strip()
        if name in rows:
            raise DataError(f"Labels CSV {path!r}, line {line}: {name!r} is listed twice.")
        rows[name] = {header[i]: (row[i].strip() or None) for i in range(len(row)) if i != key}
    return columns, rows


def class_ids(values, source):
    """Turns image-level label values into class ids and class names.

    Integers (or strings of digits) are class ids as they are, named
    `"0", "1", ...`; other strings are class names, numbered in sorted
    order. `None` and `-1` mean unlabelled (id -1).

    Args:
        values: one label per image: int, str or None.
        source: the file (and column) the values come from, for errors.

    Returns:
        `(ids, class_names)`: `(I,)` int32 ids and a tuple of names.

    Raises:
        DataError: ids below -1, a mix of numbers and names, or no label at all.

    Example:

    >>> class_ids(["Penn", None, "Fudan"], "labels.csv")
    (array([ 1, -1,  0], dtype=int32), ('Fudan', 'Penn'))
    """
    def as_int(value):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        return None

    present = [v for v in values if v is not None and as_int(v) != -1]
    if not present:
        raise DataError(f"{source}: no image has a label.")
    numbers = [as_int(v) for v in present]
    if all(n is not None for n in numbers):
        if min(numbers) < 0:
            raise DataError(f"{source}: class id {min(numbers)} is negative (-1 = unlabelled).")
        ids = [-1 if v is None else as_int(v) for v in values]
        return np.array(ids, "int32"), tuple(str(i) for i in range(max(numbers) + 1))
    if any(n is not None for n in numbers):
        raise DataError(f"{source}: labels mix class ids and class names, e.g. "
                        f"{sorted({str(v) for v in present})[:4]}.")
    names = tuple(sorted({str(v) for v in present}))
    index = {name: i for i, name in enumerate(names)}
    ids = [-1 if v is None or as_int(v) == -1 else index[str(v)] for v in values]
    return np.array(ids, "int32"), names
