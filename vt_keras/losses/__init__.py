"""vt_keras.losses."""
from vt_keras.losses.cka import CKALoss, cka
