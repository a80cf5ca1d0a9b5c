"""TensorBoard writes and reads its event files with the C checksum, and the files stay valid TFRecords."""

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter

from prevpos.analysis.sinks import image_summary
from prevpos.fast import tensorboard_crc


def spec_masked_crc(data: bytes) -> int:
    """The TFRecord format's masked CRC-32C, from TensorBoard's pure-Python CRC (which install() leaves alone)."""
    crc = pywrap_tensorflow.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("size", [0, 1, 7, 8, 63, 4096, 50_001])
def test_the_c_checksum_equals_tensorboards(size):
    data = os.urandom(size)
    assert tensorboard_crc.masked_crc32c(data) == spec_masked_crc(data)


def test_event_files_written_after_install_are_valid_records(tmp_path):
    assert tensorboard_crc.install()
    assert record_writer.masked_crc32c is tensorboard_crc.masked_crc32c
    writer = SummaryWriter(str(tmp_path))
    buffer = io.BytesIO()  # noise: a PNG about the size of one of our figures
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 100, 4), dtype=np.uint8)).save(buffer, "png")
    figure = buffer.getvalue()
    writer.add_text("note", "hello", 3)
    writer._get_file_writer().add_summary(image_summary("figure", figure), 5)
    writer.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    raw, records = events.read_bytes(), []
    while raw:  # each record: length (u64), its masked crc (u32), data, the data's masked crc (u32)
        (length,) = struct.unpack("<Q", raw[:8])
        (length_crc,) = struct.unpack("<I", raw[8:12])
        data = raw[12:12 + length]
        (data_crc,) = struct.unpack("<I", raw[12 + length:16 + length])
        assert length_crc == spec_masked_crc(raw[:8]) and data_crc == spec_masked_crc(data)
        records.append(data)
        raw = raw[16 + length:]
    assert len(records) == 3 and figure in records[2]  # the file version header, the text, the figure
