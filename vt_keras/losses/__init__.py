"""vt_keras.losses."""
from vt_keras.losses.cka import CKALoss, cka
from vt_keras.losses.contrastive import InfoNCELoss, info_nce
from vt_keras.losses.crossclr import DEFAULTS as CROSSCLR_DEFAULTS
from vt_keras.losses.crossclr import PRESETS as CROSSCLR_PRESETS
from vt_keras.losses.crossclr import crossclr_loss
from vt_keras.losses.crossclr_queue import CrossCLRLoss, CrossCLRQueue, crossclr_local_global
from vt_keras.losses.soft_dtw import pairwise_cost, soft_dtw, soft_dtw_alignment, soft_dtw_divergence
from vt_keras.losses.vt_twins import VTTwinsLoss, vt_twins_loss
