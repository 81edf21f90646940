"""vt_keras.losses."""
from vt_keras.losses.cka import CKALoss, cka
from vt_keras.losses.contrastive import InfoNCELoss, info_nce
from vt_keras.losses.crossclr import PRESETS as CROSSCLR_PRESETS
from vt_keras.losses.crossclr import crossclr_loss
from vt_keras.losses.crossclr_queue import CrossCLRLoss, crossclr_local_global
