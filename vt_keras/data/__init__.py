"""vt_keras.data: YouTube-8M records (frame, video and segment level), the label taxonomy and synthetic data."""
from vt_keras.data.checks import data_counters, data_errors, iterate, reset_data_counters
from vt_keras.data.files import list_files
from vt_keras.data.pipeline import record_dataset
from vt_keras.data.quantization import dequantize, quantize
from vt_keras.data.segments import read_segment_ratings, segment_dataset, video_segments
from vt_keras.data.synthetic import ensure_default_data, ensure_default_video_data, make_yt8m_data
from vt_keras.data.taxonomy import Taxonomy, TaxonomyClass
from vt_keras.data.yt8m import (
    FRAME_FEATURES,
    VIDEO_FEATURES,
    frame_dataset,
    parse_frame_example,
    parse_video_example,
    video_dataset,
)
from vt_keras.data.yt8m_writers import (
    FrameExampleWriter,
    VideoExampleWriter,
    make_frame_example,
    make_video_example,
    write_frame_records,
    write_video_records,
)
