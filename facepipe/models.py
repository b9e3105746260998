"""The two networks and the model directory (``weights.pt`` + ``meta.json``) that inference loads.

* keypoints: torchvision's ResNet (standard 7x7 stride-2 stem, fast on CPU) with a 1-channel input
  and a ``2*K`` regression head predicting coordinates normalised to [-1, 1] of the input size;
* emotion: a VGG-style CNN of conv-BN-ReLU blocks with dropout and a 7-way head.

Images are ``uint8`` until :func:`preprocess`, which applies the normalisation stored in
``meta.json``: training and inference read it from the same place, so they cannot disagree.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision

import facepipe
from facepipe import storage
from facepipe.model_dir import META, WEIGHTS, WEIGHTS_DTYPES, check_model_dir, model_id, read_meta  # noqa: F401  (re-exported)
from facepipe.tasks import get_task

RESNETS = ("resnet18", "resnet34", "resnet50")
#: Block type and blocks per stage of each ResNet depth (as torchvision's factories build them).
_RESNET_LAYOUT = {
    "resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (torchvision.models.resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
}


class _WidthResNet(torchvision.models.ResNet):
    """torchvision's ResNet with every stage's width scaled by ``width / 64`` (same blocks, same layout)."""

    def __init__(self, block, layers: list[int], width: int, num_classes: int):
        self._width = width
        super().__init__(block, layers, num_classes=num_classes)
        self.bn1 = nn.BatchNorm2d(width)
        nn.init.ones_(self.bn1.weight)
        nn.init.zeros_(self.bn1.bias)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # the first stage: its input is the stem's ``width`` channels
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


class IntegralHead(nn.Module):
    """Heatmaps from the last feature map, read out as coordinates by their expectation.

    Deconvolutions upsample the ResNet's last stage (stride 32) by ``2**upsample`` (Xiao et al.
    2018, "Simple Baselines"); each point's heatmap is a softmax over positions and its coordinate
    the expected cell centre (Sun et al. 2018, integral regression), in [-1, 1] of the input like
    the pooled head's, so the loss, the TTA and everything downstream are unchanged.
    """

    def __init__(self, in_channels: int, num_points: int, channels: int = 64, upsample: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(upsample):
            layers += [nn.ConvTranspose2d(c, channels, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            c = channels
        layers.append(nn.Conv2d(c, num_points, 1))
        self.layers = nn.Sequential(*layers)
        self.stride = 32 // 2**upsample

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hm = self.layers(features).float()
        n, k, h, w = hm.shape
        prob = hm.flatten(2).softmax(-1).view(n, k, h, w)
        size_x, size_y = w * self.stride, h * self.stride

        # Cell j covers input pixels [j*stride, (j+1)*stride): its centre, in the [-1, 1] scale of facepipe.coords.to_pixels.
        def centres(cells: int, size: int) -> torch.Tensor:
            px = (torch.arange(cells, device=hm.device, dtype=hm.dtype) + 0.5) * self.stride - 0.5
            return px / ((size - 1) / 2.0) - 1.0

        x = (prob.sum(2) * centres(w, size_x)).sum(-1)
        y = (prob.sum(3) * centres(h, size_y)).sum(-1)
        return torch.stack([x, y], dim=-1)


class KeypointResNet(nn.Module):
    """torchvision ResNet with a 1-channel stem and a head for ``num_points`` (x, y).

    ``width`` is the first stage's channel count (64 in the standard ResNet; the later stages
    double it): 24 or 32 keep a ResNet18 within a few MB for shipping inside the package.
    ``head``: ``pool`` regresses the coordinates from globally pooled features; ``integral``
    reads them from upsampled heatmaps (:class:`IntegralHead`), which keeps where features are.
    """

    HEADS = ("pool", "integral")

    def __init__(self, num_points: int, depth: str = "resnet18", dropout: float = 0.0, width: int = 64, head: str = "pool"):
        super().__init__()
        if depth not in RESNETS:
            raise ValueError(f"unknown ResNet {depth!r}; choose one of {RESNETS}")
        if width < 8 or width % 8:
            raise ValueError(f"width must be a multiple of 8 (>= 8), got {width}")
        if head not in self.HEADS:
            raise ValueError(f"unknown keypoint head {head!r}; choose one of {self.HEADS}")
        if width == 64:
            net = getattr(torchvision.models, depth)(weights=None, num_classes=2 * num_points)
        else:
            net = _WidthResNet(*_RESNET_LAYOUT[depth], width, 2 * num_points)
        # Keep the standard stride-2 stem: a stride-1 stem is ~17x slower on CPU for little gain.
        net.conv1 = nn.Conv2d(1, width, kernel_size=7, stride=2, padding=3, bias=False)
        in_features = net.fc.in_features if width == 64 else 8 * width * (4 if depth == "resnet50" else 1)
        if head == "integral":
            net.fc = nn.Identity()  # unused: forward stops before the pooling
            self.head = IntegralHead(in_features, num_points)
        else:
            net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 2 * num_points)) if dropout else nn.Linear(in_features, 2 * num_points)
        self.net = net
        self.num_points = num_points
        self.head_type = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_type == "pool":
            return self.net(x).view(-1, self.num_points, 2)
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return self.head(n.layer4(n.layer3(n.layer2(n.layer1(x)))))


class EmotionCNN(nn.Module):
    """VGG-style CNN: blocks of (conv-BN-ReLU) x ``convs_per_block`` + max-pool + channel dropout.

    ``dropout`` is applied before the 7-way head, ``block_dropout`` (``Dropout2d``) after every block.
    """

    def __init__(self, num_classes: int = 7, widths: list[int] | tuple[int, ...] = (64, 128, 256), convs_per_block: int = 2,
                 dropout: float = 0.3, block_dropout: float = 0.0):
        super().__init__()
        if not widths or convs_per_block < 1:
            raise ValueError("EmotionCNN needs at least one block of at least one conv")
        layers: list[nn.Module] = []
        c_in = 1
        for w in widths:
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c_in = w
            # Present even at p=0 so saved weights keep the same layer indices for any setting.
            layers += [nn.MaxPool2d(2), nn.Dropout2d(block_dropout)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _keypoint_resnet(depth: str):
    return lambda num_outputs, **args: KeypointResNet(num_outputs, depth=depth, **args)


#: The architecture registry: name → (the task whose outputs it predicts, factory(num_outputs, **arch_args)).
ARCHS = {
    **{depth: ("keypoints", _keypoint_resnet(depth)) for depth in RESNETS},
    "vgg_cnn": ("emotion", lambda num_outputs, **args: EmotionCNN(num_outputs, **args)),
}


#: The ``arch`` of a model directory holding several trained networks of one task (see :func:`save_ensemble`).
ENSEMBLE = "ensemble"


class Ensemble(nn.Module):
    """Member networks run on the same input; the output is their average as the task defines it
    (``Task.average``: mean class probabilities for emotion, mean coordinates for keypoints)."""

    def __init__(self, members: list[nn.Module], average):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.average = average

    def forward(self, x: torch.Tensor, each: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """The averaged output, or with ``each`` every member's own output (training them together:
        the call goes through the DDP wrapper, so their gradients are synchronised)."""
        outputs = [m(x) for m in self.members]
        return outputs if each else self.average(outputs)


def ensemble_spec(arch: str, arch_args: dict, members: int) -> tuple[str, dict]:
    """``(arch, arch_args)`` of ``members`` networks of one architecture as one ensemble (1: the network itself)."""
    if members == 1:
        return arch, arch_args
    return ENSEMBLE, {"members": [{"arch": arch, "arch_args": dict(arch_args)} for _ in range(members)]}


def build_model(task: str, arch: str, arch_args: dict, num_outputs: int) -> nn.Module:
    """Construct an untrained ``arch`` network for ``task``; ``num_outputs`` = keypoints (K) or classes.

    ``arch`` ``"ensemble"`` builds the networks listed in ``arch_args["members"]`` (each an
    ``{"arch", "arch_args"}`` of the registry). Weights are laid out channels-last: on CPU
    (oneDNN) that makes these convolutions 3-5x faster.
    """
    if arch == ENSEMBLE:
        members = arch_args.get("members") if isinstance(arch_args, dict) else None
        if not members or not all(isinstance(m, dict) and m.get("arch") not in (None, ENSEMBLE) for m in members):
            raise ValueError("an ensemble's arch_args must list its members as {'arch': <a registry name>, 'arch_args': {...}}")
        nets = [build_model(task, m["arch"], m.get("arch_args", {}), num_outputs) for m in members]
        return Ensemble(nets, get_task(task).average)
    fits = sorted(name for name, (t, _) in ARCHS.items() if t == task)
    if not fits:
        raise ValueError(f"unknown task {task!r}; the architectures serve {sorted({t for t, _ in ARCHS.values()})}")
    if arch not in fits:
        raise ValueError(f"{task} model must be one of {fits}, got {arch!r}")
    return ARCHS[arch][1](num_outputs, **arch_args).to(memory_format=torch.channels_last)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively, so mixed precision pays off there.

    CUDA: any GPU that supports bf16. CPU: only with AVX512-BF16 or AMX instructions; without
    them oneDNN emulates bf16 and autocast would be slower than fp32. Measured on a 2-core Zen 5
    (avx512_bf16): emotion CNN training 405 -> 784 img/s, keypoint ResNet18 170 -> 284 img/s.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_flags() -> set[str]:
    """The CPU feature flags of this machine (Linux ``/proc/cpuinfo``; empty elsewhere, so fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line for line in f if line.startswith("flags")), "").partition(":")[2].split())
    except OSError:
        return set()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- pre/post-processing shared by training, evaluation and annotation -------------------------


def view_side(meta: dict) -> int:
    """Side of the window the network sees: ``meta["crop"]`` for a model trained on random crops
    (the centre of the ``input_size`` image), else ``input_size``."""
    return int(meta.get("crop") or meta["input_size"])


def preprocess(images: np.ndarray | torch.Tensor, meta: dict, device: torch.device | str = "cpu", centre: bool = True) -> torch.Tensor:
    """uint8 [N, H, W] → float [N, 1, H, W] normalised as the model was trained.

    For a model trained on random crops (``meta["crop"]``), ``input_size`` images are cut to their
    centre window (``centre=False`` keeps them whole, for views chosen by the caller); images
    already at the crop side (training batches) pass as they are.
    """
    x = torch.as_tensor(images, device=device)
    if x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 until preprocessing, got {x.dtype}")
    side = view_side(meta)
    if centre and x.shape[-1] > side:
        o = (x.shape[-1] - side) // 2
        x = x[..., o:o + side, o:o + side]
    norm = meta["normalization"]
    x = ((x.float() / 255.0 - norm["mean"]) / norm["std"]).unsqueeze(1)
    return x.contiguous(memory_format=torch.channels_last)


# --- model directory ---------------------------------------------------------------------------


def make_meta(task: str, arch: str, arch_args: dict, input_size: int, labels: list[str], mean: float, std: float, **extra) -> dict:
    """The ``meta.json`` content: everything inference needs, and where the model came from."""
    meta = {
        "task": task,
        "arch": arch,
        "arch_args": arch_args,
        "input_size": input_size,
        "normalization": {"mean": round(float(mean), 6), "std": round(float(std), 6)},
        get_task(task).label_key: list(labels),
        "facepipe_version": facepipe.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta.update(extra)
    return meta


#: Key suffix of an int8 tensor's per-output-channel scale in ``weights.pt``.
_SCALE = "@int8_scale"


def _int8_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convolution and linear weights as int8 with one float16 scale per output channel (symmetric,
    the largest magnitude maps to 127: a quarter of the float32 file); other floating tensors
    (norm statistics, biases: few values, some of them large) as float16. Plain tensors, so the
    file stays a state dict that ``torch.load(weights_only=True)`` reads."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v
        elif v.dim() < 2:
            out[k] = v.to(torch.float16)
        else:
            w = v.float()
            scale = (w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) / 127).clamp_min(1e-12).to(torch.float16)
            out[k] = torch.round(w / scale.float()).clamp(-127, 127).to(torch.int8)
            out[k + _SCALE] = scale
    return out


def _float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`_int8_state` undone (int8 times its scale); a state without scales comes back as it is."""
    scales = {k[: -len(_SCALE)]: v for k, v in state.items() if k.endswith(_SCALE)}
    if not scales:
        return state
    return {k: (v.float() * scales[k].float() if k in scales else v) for k, v in state.items() if not k.endswith(_SCALE)}


def save_model_dir(path: str | os.PathLike, model: nn.Module, meta: dict, dtype: torch.dtype | str | None = None) -> Path:
    """Write ``weights.pt`` (a plain state dict) and ``meta.json`` (with the weights' sha256).

    ``dtype`` (a name of :data:`WEIGHTS_DTYPES` or a torch dtype) stores floating-point tensors in
    that type for shipping: ``float16`` halves the file, ``int8`` quarters it (per-channel scales,
    :func:`_int8_state`); :func:`load_model` loads them back into the fp32 network.
    """
    import hashlib

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    if dtype is not None:
        name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
        if name not in WEIGHTS_DTYPES:
            raise ValueError(f"weights dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {name!r}")
        if name == "int8":
            state = _int8_state(state)
        else:
            state = {k: v.to(getattr(torch, name)) if v.is_floating_point() else v for k, v in state.items()}
        meta = {**meta, "weights_dtype": name}
    tmp = path / (WEIGHTS + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path / WEIGHTS)
    meta = dict(meta)
    meta["weights_sha256"] = hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()
    meta.pop("model_id", None)  # derived from the new weights by the one formula annotation also reads
    meta["model_id"] = model_id(meta)
    meta["num_parameters"] = count_parameters(model)
    (path / META).write_text(json.dumps(meta, indent=2))
    return path


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Build the network described by ``meta.json`` and load its weights (no pickled code).

    ValueError, one line naming the file, when meta.json fails :func:`facepipe.model_dir.check_model_dir`
    or describes no network facepipe has, when ``weights.pt`` is not a plain state dict, or when its
    tensors do not fit that network (another class or point count, another architecture). A
    directory on an object store is loaded from its local copy."""
    path = Path(storage.local_copy(path))
    meta = check_model_dir(path)
    labels = meta.get("keypoint_names") or meta.get("class_names") or []
    try:
        model = build_model(meta["task"], meta["arch"], meta["arch_args"], len(labels))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path / META}: describes no network facepipe can build ({type(e).__name__}: {e})") from None
    try:
        with warnings.catch_warnings():  # torch warns about an odd pickle before refusing it: the error says enough
            warnings.simplefilter("ignore")
            state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's text would suggest weights_only=False, which runs pickled code
        raise ValueError(f"{path / WEIGHTS}: not a plain state dict of tensors, refused ({type(e).__name__})") from None
    try:
        model.load_state_dict(_float_state(state))
    except (RuntimeError, TypeError, AttributeError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__)
        raise ValueError(f"{path / WEIGHTS}: does not fit the network {path / META} describes ({detail[:300]})") from None
    return model.to(device).eval(), meta


#: meta.json fields that describe one trained network, kept per member in an ensemble's ``members``.
_MEMBER_FIELDS = ("arch", "arch_args", "model_id", "num_parameters", "trained_epochs", "best_epoch", "train_config", "metrics", "created")
#: Fields every member must share: the ensemble feeds all of them the same input.
_SHARED_FIELDS = ("task", "input_size", "crop", "normalization", "framing")


def save_ensemble(member_dirs: list[str | os.PathLike], output: str | os.PathLike, dtype: torch.dtype | str | None = None) -> Path:
    """One model directory that runs the trained models in ``member_dirs`` and averages them.

    The members must share task, labels, input size and crop, normalisation and framing (else ValueError
    naming the field); the new ``meta.json`` keeps the first member's data and training facts and
    lists every member's architecture, training settings and metrics under ``members``.
    ``dtype`` defaults to the first member's stored weight type.
    """
    if len(member_dirs) < 2:
        raise ValueError(f"an ensemble needs at least 2 model directories, got {len(member_dirs)}")
    loaded = [load_model(d) for d in member_dirs]
    first = loaded[0][1]
    label_key = get_task(first["task"]).label_key
    for d, (_, meta) in zip(member_dirs[1:], loaded[1:]):
        for field in (*_SHARED_FIELDS, label_key):
            if meta.get(field) != first.get(field):
                raise ValueError(f"{d}: {field!r} is {meta.get(field)!r}, but {member_dirs[0]} has {first.get(field)!r}; "
                                 "ensemble members must share it")
    members = [{"model_dir": str(d), **{k: m[k] for k in _MEMBER_FIELDS if k in m}} for d, (_, m) in zip(member_dirs, loaded)]
    meta = {k: v for k, v in first.items() if k not in (*_MEMBER_FIELDS, "weights_sha256", "weights_dtype")}
    meta.update(arch=ENSEMBLE, arch_args={"members": [{"arch": m["arch"], "arch_args": m["arch_args"]} for m in members]},
                members=members, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    model = Ensemble([net for net, _ in loaded], get_task(first["task"]).average)
    if dtype is None and first.get("weights_dtype"):
        dtype = first["weights_dtype"]
    return save_model_dir(output, model, meta, dtype=dtype)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP / torch.compile wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)
