"""Key-name translation from other libraries' layouts to ours, as one table of rules.

Our models use torchvision's names (ResNets, MobileNetV2) or timm's (GhostNet).
Checkpoints from elsewhere differ in three ways, handled in this order:

1. wrappers: ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile)
   segments are removed;
2. containers: mmdet/mmpretrain checkpoints hold a whole detector or classifier;
   ``backbone.*`` is the model, ``head.fc.*`` its classifier, the rest (neck,
   RPN, ROI heads) is set aside as *ignored*;
3. module names: a :class:`Layout` whose ``signature`` matches a key the model
   lacks renames keys with its rules. Every rule was read off the other
   library's source and checked against its model (see tests/test_weights.py).

Facts behind the table: mmdet's ResNet names its BN ``bn1``/``bn2``/``bn3``
(``norm1`` is only a Python property), so a plain mmdet ResNet differs from
torchvision only by ``backbone.``; its deep stem is one ``stem`` Sequential
(conv, BN, ReLU) × 3 while timm/resnetkit keep the last BN as ``bn1``. timm's
MobileNetV2 has torchvision's modules in the same order under other names, with
blocks nested per stage (``blocks.stage.block``) where torchvision counts them
flat (``features.N``). The tutorials' checkpoints: kuangliu/pytorch-cifar names our
``downsample`` ``shortcut`` and our ``fc`` ``linear``; the d2l book's ResNet-18 is one
``nn.Sequential`` (b1 … b5 at ``0.`` … ``4.``, the Linear at ``7.``), d2l 1.0's puts it
under ``net.`` with ``b2`` … ``b5`` and ``last`` by name.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_WRAPPER = re.compile(r"^module\.|(?:^|(?<=\.))_orig_mod\.")


@dataclass(frozen=True)
class Layout:
    """Another library's names for one of our families.

    ``rules`` are ``(regex, replacement)`` pairs; the first that matches a key
    renames it (``{classifier}`` = the model's classifier path). ``renumber`` =
    ``(regex with two groups, template, start)`` then flattens nested
    ``stage.block`` indices into one running index, in numeric order.
    """

    name: str
    signature: str
    rules: tuple[tuple[str, str], ...]
    renumber: tuple[str, str, int] | None = None


_BLOCK = r"^(blocks\.\d+\.\d+\.)"

LAYOUTS: tuple[Layout, ...] = (
    Layout("mmdet/mmpretrain deep-stem ResNet", r"^stem\.\d+\.", (
        (r"^stem\.7\.", "bn1."),                  # last stem BN is our top-level bn1
        (r"^stem\.([013-6])\.", r"conv1.\1."),    # conv, BN, ReLU, conv, BN, ReLU, conv
    )),
    Layout("timm MobileNetV2", r"^blocks\.\d+\.\d+\.conv_pwl\.", (
        # stem and head conv+BN are numbered as one block before the first and one after the last
        (r"^conv_stem\.", "blocks.-1.0.0."),
        (r"^bn1\.", "blocks.-1.0.1."),
        (r"^conv_head\.", "blocks.999.0.0."),
        (r"^bn2\.", "blocks.999.0.1."),
        (r"^classifier\.", "{classifier}."),
        # blocks.0.0 is depthwise-separable (no expansion): dw 3x3, BN, pw-linear, BN
        (r"^(blocks\.0\.0\.)conv_dw\.", r"\1conv.0.0."),
        (r"^(blocks\.0\.0\.)bn1\.", r"\1conv.0.1."),
        (r"^(blocks\.0\.0\.)conv_pw\.", r"\1conv.1."),
        (r"^(blocks\.0\.0\.)bn2\.", r"\1conv.2."),
        # inverted residuals: pw expand, BN, dw 3x3, BN, pw-linear, BN
        (_BLOCK + r"conv_pw\.", r"\1conv.0.0."),
        (_BLOCK + r"bn1\.", r"\1conv.0.1."),
        (_BLOCK + r"conv_dw\.", r"\1conv.1.0."),
        (_BLOCK + r"bn2\.", r"\1conv.1.1."),
        (_BLOCK + r"conv_pwl\.", r"\1conv.2."),
        (_BLOCK + r"bn3\.", r"\1conv.3."),
    ), renumber=(r"^blocks\.(-?\d+)\.(\d+)\.", "features.{}.", 0)),
    # kuangliu/pytorch-cifar models/resnet.py: our blocks with the projection named `shortcut`, the fc `linear`
    Layout("kuangliu pytorch-cifar ResNet", r"^layer\d\.\d+\.shortcut\.[01]\.", (
        (r"^(layer\d\.\d+\.)shortcut\.", r"\1downsample."),
        (r"^linear\.", "{classifier}."),
    )),
    # d2l (chapter_convolutional-modern/resnet.md): net = nn.Sequential(b1, b2, b3, b4, b5, pool, flatten, linear)
    Layout("d2l nn.Sequential ResNet-18", r"^[1-4]\.\d+\.conv1\.", (
        (r"^0\.", "b1."), (r"^1\.", "b2."), (r"^2\.", "b3."), (r"^3\.", "b4."), (r"^4\.", "b5."),
        (r"^7\.", "{classifier}."),
    )),
    # d2l 1.0's ResNet18 class: self.net = Sequential(b1) + add_module("b2".."b5") + add_module("last", pool, flatten, fc)
    Layout("d2l ResNet18 class", r"^net\.b[2-5]\.\d+\.conv1\.", (
        (r"^net\.0\.", "b1."),
        (r"^net\.last\.2\.", "{classifier}."),
        (r"^net\.", ""),
    )),
)


def strip_wrappers(key: str) -> str:
    """``module.layer1...`` / ``_orig_mod.layer1...`` -> ``layer1...``."""
    return _WRAPPER.sub("", key)


def split_container(keys: Iterable[str], model_keys: set[str],
                    classifier: str | None) -> tuple[dict[str, str], list[str]]:
    """Map an mmdet/mmpretrain container's keys to the model's; return (renames, ignored keys).

    Applies only when the checkpoint has ``backbone.*`` keys and the model has no
    ``backbone`` module of its own.
    """
    keys = list(keys)
    if not any(k.startswith("backbone.") for k in keys) or any(k.startswith("backbone.") for k in model_keys):
        return {k: k for k in keys}, []
    renames, ignored = {}, []
    for k in keys:
        if k.startswith("backbone."):
            renames[k] = k[len("backbone."):]
        elif k.startswith("head.fc.") and classifier:  # mmpretrain's LinearClsHead
            renames[k] = classifier + "." + k[len("head.fc."):]
        else:
            ignored.append(k)
    return renames, ignored


def detect_layout(keys: Iterable[str], model_keys: set[str]) -> Layout | None:
    """The first layout whose signature matches a checkpoint key that the model does not have."""
    foreign = [k for k in keys if k not in model_keys]
    for layout in LAYOUTS:
        sig = re.compile(layout.signature)
        if any(sig.search(k) for k in foreign):
            return layout
    return None


def apply_layout(layout: Layout, keys: Iterable[str], classifier: str | None) -> dict[str, str]:
    """``{checkpoint key: model key}`` under ``layout``'s rules."""
    rules = [(re.compile(p), r.replace("{classifier}", classifier or "classifier")) for p, r in layout.rules]
    out = {}
    for k in keys:
        out[k] = next((p.sub(r, k, count=1) for p, r in rules if p.match(k)), k)
    if layout.renumber:
        pattern, template, start = layout.renumber
        block_re = re.compile(pattern)
        found = sorted({(int(m[1]), int(m[2])) for v in out.values() if (m := block_re.match(v))})
        index = {b: start + i for i, b in enumerate(found)}
        out = {k: block_re.sub(lambda m: template.format(index[int(m[1]), int(m[2])]), v, count=1)
               for k, v in out.items()}
    return out


_SHORTCUT = re.compile(r"^(.*\.downsample\.)(\d+)\.(.+)$")


def _shortcut_slots(keys: Iterable[str]) -> dict[str, list[int]]:
    slots: dict[str, set[int]] = {}
    for k in keys:
        if m := _SHORTCUT.match(k):
            slots.setdefault(m[1], set()).add(int(m[2]))
    return {p: sorted(s) for p, s in slots.items()}


def align_shortcut_slots(names: dict[str, str], model_keys: set[str]) -> dict[str, str]:
    """Re-index ResNet-D shortcuts whose optional pool slot differs from the model's.

    timm (``nn.Identity``), mmdet (``AvgPool2d(1)``) and resnetkit all keep the pool
    slot of a stride-1 ResNet-D shortcut (``layer1.0.downsample``: conv at ``.1``,
    norm at ``.2``), but resnetkit's own files written before it did have the conv
    at ``.0``. A shortcut with as many parameterised slots as the model's but
    starting elsewhere is shifted, so those files still load.
    """
    ours, theirs = _shortcut_slots(model_keys), _shortcut_slots(names.values())
    shift = {p: ours[p][0] - s[0] for p, s in theirs.items()
             if p in ours and len(ours[p]) == len(s) and ours[p][0] != s[0]}
    if not shift:
        return names

    def move(key: str) -> str:
        m = _SHORTCUT.match(key)
        return f"{m[1]}{int(m[2]) + shift[m[1]]}.{m[3]}" if m and m[1] in shift else key

    return {k: move(v) for k, v in names.items()}
