"""Trial packing: K trials of one architecture trained as one fused computation on one device.

`engine.py` holds the API (PackedModels, PackMember, build_member); `skeleton.py` the shared
module that vmap runs once per member; `dropout.py` its dropout, each member's masks drawn
from the member's own generator; `loop.py` the packed worker's loop (one solo Trainer
per member around the fused step), imported by `worker.main` only for a packed worker.
"""

from trainyard.worker.packing.engine import PackedModels, PackMember, build_member

__all__ = ["PackMember", "PackedModels", "build_member"]
