"""Trial packing: K trials of one architecture trained as one fused computation on one device.

`engine.py` holds the API (PackedModels, PackMember, build_member) and how a worker will use
it; `skeleton.py` the shared module that vmap runs once per member.
"""

from trainyard.worker.packing.engine import PackedModels, PackMember, build_member

__all__ = ["PackMember", "PackedModels", "build_member"]
