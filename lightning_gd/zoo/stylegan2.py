"""StyleGAN2 generators from local files: `stylegan2:PATH` (pure PyTorch, runs on CPU; nothing is downloaded).

Two layouts are read, and never a pickle:
- **rosinality** (stylegan2-pytorch): the `.pt` of its `train.py` or `convert_weight.py`, a dict with `g_ema` (the
  generator's state dict: `style.1..8.*`, `input.input`, `conv1.*`, `to_rgb1.*`, `convs.N.*`, `to_rgbs.N.*`,
  `noises.noise_i`) and, when converted from TensorFlow, `latent_avg` (the mean w, for truncation);
- **NVlabs** (stylegan2-ada-pytorch): a plain state dict of `G_ema` (`mapping.fc{i}.*`, `mapping.w_avg`,
  `synthesis.b{res}.*`). NVlabs publishes pickles (`.pkl`), which run code when loaded; export the weights in
  their environment instead (`export_hint`):

      import pickle, torch, dnnlib, legacy   # inside NVlabs' stylegan2-ada-pytorch checkout
      with dnnlib.util.open_url("network.pkl") as f:
          G = legacy.load_network_pkl(f)["G_ema"]
      print(G.init_kwargs)                   # conv_clamp (256 for networks trained there), c_dim (must be 0)
      torch.save(G.state_dict(), "G_ema.pt")

How NVlabs' layout differs (handled by `nvlabs_to_rosinality`; the network is the same):
- names: `mapping.fc{i}` = `style.{i+1}`; `synthesis.b4.conv1` = `conv1`; `b{r}.conv0`, `b{r}.conv1` = the two
  convs at r×r; `affine` = `conv.modulation`; `noise_strength` () = `noise.weight` (1,); `noise_const` (r, r) =
  `noises.noise_i` (1, 1, r, r); a layer's `bias` = `activate.bias`; `torgb` = `to_rgb1` / `to_rgbs.N`;
- shapes: conv weights (O, I, k, k) rather than (1, O, I, k, k); `const` (C, 4, 4) rather than (1, C, 4, 4);
  ToRGB `bias` (3,) rather than (1, 3, 1, 1);
- filters: NVlabs stores the normalised [1, 3, 3, 1] filter (sum 1) in `resample_filter` buffers and multiplies
  by 4 after upsampling; rosinality stores it already ×4 (`conv.blur.kernel`, `upsample.kernel`);
- gains: both initialise the affine bias to 1 and scale ToRGB styles by 1/sqrt(I). NVlabs does not scale a
  demodulated conv's weight by 1/sqrt(I·k²) (demodulation cancels it), so its eps 1e-8 acts on the unscaled
  weight: the loader sets this network's eps to 1e-8/(I·k²) for NVlabs files, exact up to rounding;
- `conv_clamp` (clipping activations at ±256 in networks trained with stylegan2-ada-pytorch's mixed precision) is
  not in the state dict: pass `conv_clamp=256` when `G.init_kwargs` says so. Computation here is float32 always.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch
from torch import nn

from lightning_gd.errors import InvalidValue
from lightning_gd.models.weights import read_file, shapes_of, state_dict_of, state_differences
from lightning_gd.zoo.stylegan2_layers import (
    NOISE_MODES,
    EqualLinear,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    StyledConv,
    ToRGB,
)

LATENTS = ("z", "w")
WHAT = "StyleGAN2 generator (rosinality's .pt with g_ema, or a state dict of NVlabs' G_ema)"
W_AVG_SAMPLES = 4096  # z samples averaged for the mean w when a file has none (as rosinality's generate.py)


class StyleGAN2Generator(nn.Module):
    """z (B, z_dim) → mapping → w (B, w_dim) → synthesis → images (B, 3, R, R), unclamped (about [-1, 1]).

    Hookable layers, one per synthesis convolution, each returning its featuremap: `layer1` at 4×4, then two per
    resolution: `layer2`, `layer3` at 8×8, `layer4`, `layer5` at 16×16, …, `layer{2k}`, `layer{2k+1}` at
    2^(k+2) (the first of each pair upsamples). `layer_sizes()` lists them with their shapes. The RGB skip path
    (`torgb.4`, `torgb.8`, …) is separate, so editing a layer changes the image only through the layers after it.

    Options (attributes, changeable after loading): `noise` (`const`: the stored noise maps, so an image depends on
    z alone; `random`: fresh noise per call; `none`), `truncation` ψ (w ← w_avg + ψ (w − w_avg); 1: off), `latent`
    (`z`: the input goes through the mapping network; `w`: the input is w itself, e.g. a projection or
    `G.mapping(z)`; note that a standard-normal w is not the mapping's distribution).
    """

    def __init__(
        self,
        resolution: int,
        channels: dict[int, int],
        mapping_dims: list[int],
        noise: str = "const",
        truncation: float = 1.0,
        latent: str = "z",
    ) -> None:
        super().__init__()
        self.resolution, self.channels = resolution, dict(channels)
        self.w_dim = mapping_dims[-1]
        fcs = [EqualLinear(a, b, lr_mul=0.01, activate=True) for a, b in zip(mapping_dims, mapping_dims[1:])]
        self.mapping = nn.Sequential(PixelNorm(), *fcs)  # (B, z_dim) → (B, w_dim)
        self.register_buffer("w_avg", torch.zeros(self.w_dim))
        self.const = nn.Parameter(torch.randn(1, channels[4], 4, 4))
        self.blocks: list[tuple[int, list[str]]] = [(4, ["layer1"])]  # (resolution, its layers) in order
        self.layer1 = StyledConv(channels[4], channels[4], self.w_dim, 4)
        self.torgb = nn.ModuleDict({"4": ToRGB(channels[4], self.w_dim, up=False)})
        res, index = 8, 2
        while res <= resolution:
            self.add_module(f"layer{index}", StyledConv(channels[res // 2], channels[res], self.w_dim, res, up=True))
            self.add_module(f"layer{index + 1}", StyledConv(channels[res], channels[res], self.w_dim, res))
            self.torgb[str(res)] = ToRGB(channels[res], self.w_dim)
            self.blocks.append((res, [f"layer{index}", f"layer{index + 1}"]))
            res, index = res * 2, index + 2
        self.noise, self.truncation, self.latent = noise, truncation, latent
        self.w_avg_source = "none"
        # the middle of the synthesis network: the 32×32 layers, then the 16×16 ones (the largest below them for a
        # network too small to have them)
        middle = [names for res, names in self.blocks if res in (32, 16)][::-1]
        self.probe_layers = tuple(n for names in middle for n in names) or tuple(self.blocks[-1][1])

    @property
    def noise(self) -> str:
        return self._noise

    @noise.setter
    def noise(self, mode: str) -> None:
        if mode not in NOISE_MODES:
            raise InvalidValue(f"noise must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
        self._noise = mode
        for m in self.modules():
            if isinstance(m, NoiseInjection):
                m.mode = mode

    @property
    def latent(self) -> str:
        return self._latent

    @latent.setter
    def latent(self, kind: str) -> None:
        if kind not in LATENTS:
            raise InvalidValue(f"latent must be 'z' (sample z, map it to w) or 'w' (the input is w), got {kind!r}")
        self._latent = kind

    @property
    def z_dim(self) -> int:
        """The input size: z's for `latent='z'`, w's for `latent='w'`."""
        return self.w_dim if self.latent == "w" else self.mapping[1].weight.shape[1]

    def layer_names(self) -> list[str]:
        return [name for _, names in self.blocks for name in names]

    def layer_sizes(self) -> dict[str, tuple[int, int, int]]:
        """Each hookable layer's featuremap shape (channels, height, width), in order."""
        return {n: (getattr(self, n).out_channels, res, res) for res, names in self.blocks for n in names}

    def truncate(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.truncation == 1 else self.w_avg + self.truncation * (w - self.w_avg)

    def fingerprint_settings(self) -> dict:
        """Options outside the state dict that change the images (noise, truncation, latent, clamping, eps)."""
        convs = [m for m in self.modules() if hasattr(m, "eps") or hasattr(m, "conv_clamp")]
        extra = sorted({(getattr(m, "eps", None), getattr(m, "conv_clamp", None)) for m in convs}, key=repr)
        return {"noise": self.noise, "truncation": self.truncation, "latent": self.latent, "convs": extra}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise InvalidValue(f"expected {self.latent} of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        w = z if self.latent == "w" else self.mapping(z)
        return self.synthesis(self.truncate(w))

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        """w (B, w_dim), the same for every layer → images (B, 3, R, R)."""
        x = self.const.expand(w.shape[0], -1, -1, -1)  # (B, C4, 4, 4)
        img = None
        for res, names in self.blocks:
            for name in names:
                x = getattr(self, name)(x, w)  # (B, C_res, res, res)
            img = self.torgb[str(res)](x, w, img)  # (B, 3, res, res)
        return img

    @torch.no_grad()
    def estimate_w_avg(self, n: int = W_AVG_SAMPLES, seed: int = 0) -> torch.Tensor:
        """The mean of mapping(z) over n seeded standard-normal z: the truncation centre of a file without one."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.mapping[1].weight.shape[1], generator=g).to(self.w_avg)
        return self.mapping(z).mean(0)


def set_conv_clamp(G: StyleGAN2Generator, conv_clamp: float | None) -> None:
    """Clip every synthesis activation and ToRGB output to ±conv_clamp (NVlabs' option; None: off)."""
    for m in G.modules():
        if hasattr(m, "conv_clamp"):
            m.conv_clamp = None if conv_clamp is None else float(conv_clamp)


# ----------------------------------------------------------------------------------------- the two layouts

_ROSINALITY_TO_OURS = [  # (rosinality's key pattern, our name as a function of the match)
    (r"style\.(\d+)\.(weight|bias)", lambda m: f"mapping.{m[1]}.{m[2]}"),
    (r"input\.input", lambda m: "const"),
    (r"conv1\.(.+)", lambda m: f"layer1.{m[1]}"),
    (r"convs\.(\d+)\.(.+)", lambda m: f"layer{int(m[1]) + 2}.{m[2]}"),
    (r"noises\.noise_(\d+)", lambda m: f"layer{int(m[1]) + 1}.noise.const"),
    (r"to_rgb1\.(.+)", lambda m: f"torgb.4.{m[1]}"),
    (r"to_rgbs\.(\d+)\.(.+)", lambda m: f"torgb.{8 << int(m[1])}.{m[2]}"),
]
_OURS_TO_ROSINALITY = [
    (r"mapping\.(\d+)\.(.+)", lambda m: f"style.{m[1]}.{m[2]}"),
    (r"const", lambda m: "input.input"),
    (r"layer(\d+)\.noise\.const", lambda m: f"noises.noise_{int(m[1]) - 1}"),
    (r"layer1\.(.+)", lambda m: f"conv1.{m[1]}"),
    (r"layer(\d+)\.(.+)", lambda m: f"convs.{int(m[1]) - 2}.{m[2]}"),
    (r"torgb\.4\.(.+)", lambda m: f"to_rgb1.{m[1]}"),
    (r"torgb\.(\d+)\.(.+)", lambda m: f"to_rgbs.{int(math.log2(int(m[1]))) - 3}.{m[2]}"),
]


def _rename(key: str, rules) -> str | None:
    for pattern, name in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return name(m)
    return None


def _conv_fan_in(state: dict[str, torch.Tensor], key: str) -> int:
    _, _, i, kh, kw = state[key].shape
    return i * kh * kw


def nvlabs_to_rosinality(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """NVlabs' G_ema state dict → rosinality's g_ema state dict and the mean w (`mapping.w_avg`). Keys that have
    no place in an unconditional skip-architecture StyleGAN2 raise a ValueError that says what the file is."""
    _refuse_other_nvlabs_networks(state)
    out: dict[str, torch.Tensor] = {}
    layers = {"b4.conv1": ("conv1", 0), "b4.torgb": ("to_rgb1", None)}
    resolutions = sorted({int(m[1]) for k in state if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    for j, res in enumerate(r for r in resolutions if r > 4):
        layers[f"b{res}.conv0"] = (f"convs.{2 * j}", 2 * j + 1)
        layers[f"b{res}.conv1"] = (f"convs.{2 * j + 1}", 2 * j + 2)
        layers[f"b{res}.torgb"] = (f"to_rgbs.{j}", None)
    unknown = []
    for key, value in state.items():
        if m := re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", key):
            out[f"style.{int(m[1]) + 1}.{m[2]}"] = value
        elif key == "synthesis.b4.const":
            out["input.input"] = value[None]  # (C, 4, 4) → (1, C, 4, 4)
        elif m := re.fullmatch(r"synthesis\.b(\d+)\.resample_filter", key):
            if int(m[1]) > 4:  # the filter of the block's RGB skip upsampling; b4 has none
                out[f"{layers[f'b{m[1]}.torgb'][0]}.upsample.kernel"] = value * 4
        elif (m := re.fullmatch(r"synthesis\.(b\d+\.(?:conv0|conv1|torgb))\.(.+)", key)) and m[1] in layers:
            out.update(_nvlabs_layer(layers[m[1]], m[2], value, unknown, key))
        elif key != "mapping.w_avg":
            unknown.append(key)
    if unknown:
        raise InvalidValue(f"NVlabs state dict: keys with no place in StyleGAN2's generator: {_listing(unknown)}")
    return out, state.get("mapping.w_avg")


def _nvlabs_layer(target: tuple[str, int | None], name: str, value: torch.Tensor, unknown: list, key: str) -> dict:
    """One parameter of an NVlabs SynthesisLayer or ToRGBLayer, under rosinality's name and shape."""
    prefix, noise_index = target
    torgb = noise_index is None
    if name == "weight":
        return {f"{prefix}.conv.weight": value[None]}  # (O, I, k, k) → (1, O, I, k, k)
    if name.startswith("affine."):
        return {f"{prefix}.conv.modulation.{name[7:]}": value}
    if name == "bias":
        return {f"{prefix}.bias": value.reshape(1, 3, 1, 1)} if torgb else {f"{prefix}.activate.bias": value}
    if name == "noise_strength" and not torgb:
        return {f"{prefix}.noise.weight": value.reshape(1)}
    if name == "noise_const" and not torgb:
        return {f"noises.noise_{noise_index}": value[None, None]}
    if name == "resample_filter" and not torgb:  # used by the upsampling conv0 only
        return {f"{prefix}.conv.blur.kernel": value * 4} if noise_index % 2 else {}
    unknown.append(key)
    return {}


def _refuse_other_nvlabs_networks(state: dict) -> None:
    keys = list(state)
    if any(k.startswith("mapping.embed.") for k in keys):
        raise InvalidValue("this NVlabs generator is conditional (mapping.embed: c_dim > 0); only unconditional ones")
    if any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in keys):
        raise InvalidValue("this is a StyleGAN3 generator (synthesis.input, synthesis.L*); stylegan2: reads StyleGAN2")
    if any(re.match(r"synthesis\.b\d+\.skip\.", k) for k in keys):
        raise InvalidValue("this NVlabs generator has the 'resnet' architecture; stylegan2: reads the 'skip' one")
    res = sorted({int(m[1]) for k in keys if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    missing = [f"synthesis.b{r}.torgb" for r in res if f"synthesis.b{r}.torgb.weight" not in state]
    if missing:
        raise InvalidValue(f"no {', '.join(missing)}: an 'orig'-architecture generator; stylegan2: reads 'skip' ones")


def _listing(keys: list[str], n: int = 12) -> str:
    return ", ".join(keys[:n]) + (f", … ({len(keys) - n} more)" if len(keys) > n else "")


def _architecture(state: dict[str, torch.Tensor], source) -> tuple[int, dict[int, int], list[int]]:
    """Resolution, channels per resolution and mapping sizes, read from a rosinality state dict's shapes."""
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    n_convs = sum(1 for k in state if re.fullmatch(r"convs\.\d+\.conv\.weight", k))
    if not n_mlp or "input.input" not in state or "conv1.conv.weight" not in state or n_convs % 2:
        raise InvalidValue(
            f"{source}: not a complete StyleGAN2 generator (style.1.weight, input.input, conv1.conv.weight and pairs "
            f"of convs.N.conv.weight expected); keys: {_listing(sorted(state))}"
        )
    dims = [state["style.1.weight"].shape[1]] + [state[f"style.{i}.weight"].shape[0] for i in range(1, n_mlp + 1)]
    channels = {4: state["input.input"].shape[1]}
    for j in range(n_convs // 2):
        channels[8 << j] = state[f"convs.{2 * j}.conv.weight"].shape[1]
    return 4 << (n_convs // 2), channels, dims


def _load_strictly(G: StyleGAN2Generator, state: dict[str, torch.Tensor], source) -> None:
    """Every key of the file used, every parameter and buffer filled, every shape the same; or a ValueError that
    lists the differences under the file's (rosinality's) names."""
    ours = {}
    unexpected = []
    for key, value in state.items():
        name = _rename(key, _ROSINALITY_TO_OURS)
        if name is None:
            unexpected.append(key)
        else:
            ours[name] = value
    expected = {k: v for k, v in G.state_dict().items() if k != "w_avg"}

    def theirs(shapes: dict) -> dict:  # reported under the file's (rosinality's) names
        return {_rename(k, _OURS_TO_ROSINALITY) or k: v for k, v in shapes.items()}

    given = {**theirs(shapes_of(ours)), **{k: ("?",) for k in unexpected}}
    problems = state_differences(theirs(shapes_of(expected)), given)
    if problems:
        raise InvalidValue(f"{source} does not fit a {G.resolution}×{G.resolution} StyleGAN2 generator: {problems}")
    G.load_state_dict({**ours, "w_avg": G.w_avg}, strict=True)


def export_hint() -> str:
    return (
        "NVlabs' .pkl files are pickles that run code when loaded, so lightning_gd never opens them. Export the "
        "weights in NVlabs' environment: with dnnlib.util.open_url(PKL) as f: G = legacy.load_network_pkl(f)"
        "['G_ema']; torch.save(G.state_dict(), 'G_ema.pt'); then use stylegan2:G_ema.pt (and conv_clamp=256 if "
        "G.init_kwargs has synthesis_kwargs.conv_clamp=256)"
    )


def read_generator(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, str]:
    """(rosinality state dict, mean w or None, layout name) from a local file, never unpickling code."""
    if Path(path).suffix.lower() == ".pkl":
        raise InvalidValue(f"{path}: {export_hint()}")
    with torch.serialization.safe_globals([argparse.Namespace]):  # rosinality's train.py saves its `args`
        obj = read_file(path, WHAT)
    w_avg = obj.get("latent_avg")
    obj = next((obj[entry] for entry in ("g_ema", "G_ema") if isinstance(obj.get(entry), dict)), obj)
    state = {k: v for k, v in state_dict_of(obj, None, path).items() if isinstance(v, torch.Tensor)}
    if "style.1.weight" in state:
        return state, w_avg, "rosinality"
    if "mapping.fc0.weight" in state:
        state, w_avg = nvlabs_to_rosinality(state)
        return state, w_avg, "nvlabs"
    raise InvalidValue(
        f"{path} is not a {WHAT}: expected rosinality's keys (style.1.weight, input.input, conv1.*, convs.N.*) in "
        f"g_ema, or NVlabs' (mapping.fc0.weight, synthesis.b4.const, …); found: {_listing(sorted(obj))}"
    )


def load(
    argument: str | None = None,
    weights: str | None = None,
    noise: str = "const",
    truncation: float = 1.0,
    latent: str = "z",
    conv_clamp: float | None = None,
    device: str | torch.device | None = None,
) -> StyleGAN2Generator:
    """`stylegan2:PATH` (or weights=PATH): the generator in eval mode, its architecture read from the file.

    `noise` (`const` default: an image depends on z alone, as dissection needs; `random`; `none`), `truncation` ψ
    (towards the file's mean w: `latent_avg` or `mapping.w_avg`, else the mean of 4096 seeded samples), `latent`
    (`z`, or `w` to feed w directly), `conv_clamp` (NVlabs' activation clipping, see the module doc)."""
    path = argument or weights
    if path is None:
        raise InvalidValue(f"stylegan2 needs a local file: stylegan2:PATH, a {WHAT}")
    if argument and weights and str(argument) != str(weights):
        raise InvalidValue(f"two files given: stylegan2:{argument} and weights={weights}; give one")
    if noise not in NOISE_MODES:
        raise InvalidValue(f"noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}")
    state, w_avg, layout = read_generator(path)
    resolution, channels, dims = _architecture(state, path)
    G = StyleGAN2Generator(resolution, channels, dims, noise=noise, truncation=float(truncation), latent=latent)
    _load_strictly(G, state, path)
    if layout == "nvlabs":  # NVlabs' eps acts on the unscaled weight (see the module doc)
        for m in G.modules():
            if isinstance(m, ModulatedConv2d):
                m.eps = 1e-8 * m.scale**2
    set_conv_clamp(G, conv_clamp)
    if w_avg is not None:
        if w_avg.numel() != G.w_dim:
            raise InvalidValue(f"{path}: the mean w has {w_avg.numel()} values; the mapping gives w of {G.w_dim}")
        G.w_avg.copy_(w_avg.reshape(-1))
        G.w_avg_source = "latent_avg" if layout == "rosinality" else "mapping.w_avg"
    else:
        G.w_avg.copy_(G.estimate_w_avg())
        G.w_avg_source = f"mean of {W_AVG_SAMPLES} samples"
    G = G.eval()
    return G if device is None else G.to(device)
