"""TensorBoard's event-file checksums in C instead of pure Python.

Without TensorFlow, TensorBoard checksums every record it writes or reads with a byte-at-a-time Python CRC-32C:
9 ms per 50 KB figure (our 2-core CPU), ~0.7 s for the ~4 MB of figures of one default run. The writer does it on
its own thread, holding the GIL, and a GPU run's training loop is Python-bound: each torch call that releases the
GIL may wait up to a switch interval (5 ms) to get it back. google-crc32c computes the same checksum in 0.03 ms.
"""

import threading

_lock = threading.Lock()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data`, as tensorboard.compat.tensorflow_stub.pywrap_tensorflow computes it."""
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def install() -> bool:
    """Make TensorBoard's event writer and reader use masked_crc32c; True if they now do.

    Leaves TensorBoard alone (False) where google-crc32c is missing or is its own pure-Python fallback, or gives a
    different checksum than TensorBoard's on a sample. Safe to call many times, from any thread.
    """
    try:
        import google_crc32c
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    with _lock:
        if record_writer.masked_crc32c is masked_crc32c:
            return True
        sample = b"prevpos \x00\xff event record"
        if google_crc32c.implementation != "c" or masked_crc32c(sample) != pywrap_tensorflow.masked_crc32c(sample):
            return False
        record_writer.masked_crc32c = masked_crc32c  # the writer imported the function by name
        pywrap_tensorflow.masked_crc32c = masked_crc32c  # the reader looks it up in its own module
        return True
