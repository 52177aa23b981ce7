"""Test-only stand-in for torchvision when it cannot be imported (PyPI has only CUDA builds of
torchvision, which fail to load next to a CPU-only torch).  segment_anything uses two functions
from it, on PIL images only; torchvision's versions of them do exactly this for PIL inputs."""
import sys
import types

import numpy as np
from PIL import Image


def install_if_missing() -> bool:
    """Returns True when the stand-in was installed (after transformers has decided that
    torchvision is absent, so that transformers never uses the stand-in)."""
    from transformers.utils import import_utils
    import_utils.is_torchvision_available()
    try:
        import torchvision.transforms.functional  # noqa: F401
        return False
    except Exception:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
    fn = types.ModuleType("torchvision.transforms.functional")
    fn.to_pil_image = lambda a: Image.fromarray(np.asarray(a))
    fn.resize = lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR)
    tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    ops, boxes = types.ModuleType("torchvision.ops"), types.ModuleType("torchvision.ops.boxes")

    def unavailable(*a, **k):   # only SamAutomaticMaskGenerator uses these; the exporter does not
        raise NotImplementedError("torchvision.ops is not available in this test environment")

    boxes.batched_nms = boxes.box_area = unavailable
    tv.__path__ = ops.__path__ = tr.__path__ = []
    tv.transforms, tr.functional, tv.ops, ops.boxes = tr, fn, ops, boxes
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn,
                        "torchvision.ops": ops, "torchvision.ops.boxes": boxes})
    return True
