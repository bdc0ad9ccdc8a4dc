"""The world's GAN as a LightningModule: a small ProGAN generator (the class that loads the published
checkpoints, `lightning_gd.zoo.progan.ProGAN`) trained at full resolution with a non-saturating loss, a lazy R1
penalty, minibatch standard deviation in the discriminator and an EMA generator.

This is written as a GAN researcher's own training module would be, so that the monitoring callbacks
have a real "someone else's training run" to plug into: the generator under training is `generator`,
its exponential moving average (the one that is shipped and sampled) is `generator_ema`.

Every step (one batch): a discriminator step on real and generated images (plus, every `r1_every` steps, the
R1 penalty γ/2 · E‖∇ₓD(x)‖² on real images, scaled by `r1_every` as lazy regularisation does), then a
generator step on the same generated images, then the EMA update
ema ← β · ema + (1 − β) · generator with β = 0.5^(batch / ema_images), where ema_images ramps up as
min(ema_kimg · 1000, ema_rampup · images seen) so the early average is not stuck at the initial weights.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from lightning_gd.errors import InvalidValue
from lightning_gd.zoo.progan import ProGAN

# [z_dim, channels at 4², 8², 16², 32², 64²]: layer1-2 at 4², layer3-4 at 8² (layer4: 256 units), … layer9-10 at
# 64². z is 128-d, not the published 512, to keep the shipped file under 15 MB (a 512-d z alone adds 1.6 M
# weights to layer1) and the CPU training cost down.
WORLD_SIZES = (128, 256, 256, 128, 64, 32)
DISCRIMINATOR_WIDTHS = (32, 64, 128, 256, 256)  # channels at 64², 32², 16², 8², 4²


class EqualConv2d(nn.Module):
    """A convolution with the equalised learning rate: unit-normal weights scaled by gain / sqrt(fan_in)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, gain: float = math.sqrt(2), padding: int | None = None
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.padding = kernel // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """x (B, C, h, w) with one more channel: the standard deviation over each group of `group` samples,
    averaged over channels and pixels (ProGAN's minibatch standard deviation)."""
    b, c, h, w = x.shape
    g = min(group, b)
    if b % g:
        g = 1
    y = x.reshape(g, b // g, c, h, w)
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B/g,)
    std = std.repeat(g).reshape(b, 1, 1, 1).expand(b, 1, h, w)
    return torch.cat([x, std], dim=1)


class Discriminator(nn.Module):
    """image (B, 3, R, R) → logit (B,). From RGB (1×1), then per resolution a 3×3 convolution and a 2× average
    pool down to 4², minibatch standard deviation, a 3×3 convolution and two dense layers; LeakyReLU(0.2)."""

    def __init__(self, widths: tuple[int, ...] | list[int] = DISCRIMINATOR_WIDTHS, resolution: int = 64) -> None:
        super().__init__()
        if 4 * 2 ** (len(widths) - 1) != resolution:
            raise InvalidValue(
                f"{len(widths)} discriminator widths make a {4 * 2 ** (len(widths) - 1)}² input, not {resolution}²"
            )
        self.from_rgb = EqualConv2d(3, widths[0], 1)
        self.down = nn.ModuleList(EqualConv2d(a, b, 3) for a, b in zip(widths[:-1], widths[1:]))
        self.final_conv = EqualConv2d(widths[-1] + 1, widths[-1], 3)
        self.dense = EqualConv2d(widths[-1], widths[-1], 4, padding=0)  # a dense layer over the 4×4 map
        self.out = nn.Linear(widths[-1], 1)
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(x), 0.2)
        for conv in self.down:
            x = F.avg_pool2d(F.leaky_relu(conv(x), 0.2), 2)
        x = F.leaky_relu(self.final_conv(minibatch_stddev(x)), 0.2)  # (B, C, 4, 4)
        x = F.leaky_relu(self.dense(x), 0.2)  # (B, C, 1, 1)
        return self.out(x.flatten(1)).flatten()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """E over the batch of ‖∇ₓ D(x)‖² at the real images (differentiable, for the discriminator's step)."""
    real = real.detach().float().requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):  # a gradient penalty wants full precision
        (grad,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def ema_beta(batch: int, images_seen: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """The EMA decay for one step of `batch` images after `images_seen` images (StyleGAN2's half-life rule)."""
    ema_images = ema_kimg * 1000.0
    if ema_rampup is not None:
        ema_images = min(ema_images, ema_rampup * images_seen)
    return 0.5 ** (batch / max(ema_images, 1e-8))


class GANModule(pl.LightningModule):
    """Non-saturating GAN on rendered scenes with a ProGAN-layout generator.

    Args:
        sizes: the generator's [z_dim, channels at 4², 8², …] (`lightning_gd.zoo.progan.ProGAN`).
        d_widths: the discriminator's channels from full resolution down to 4².
        lr: Adam learning rate of both networks (equalised learning rate makes one rate fit all layers).
        beta1, beta2: Adam betas.
        r1_gamma: weight γ of the R1 penalty γ/2 · E‖∇D(real)‖².
        r1_every: apply R1 every this many steps (lazy regularisation), scaled by it.
        ema_kimg: half-life of the EMA generator in thousands of images.
        ema_rampup: the half-life is at most this fraction of the images seen (None: no ramp-up).
        num_val_z: size of the fixed validation z used for sample grids.
        val_seed: seed of the fixed validation z.
        z_seed: seed of the training z, which are drawn per step and rank from it (`training_z`), not from
            `seed_everything`'s RNG: two runs that should differ in their z need different z_seed.
    """

    def __init__(
        self,
        sizes: tuple[int, ...] | list[int] = WORLD_SIZES,
        d_widths: tuple[int, ...] | list[int] = DISCRIMINATOR_WIDTHS,
        lr: float = 0.002,
        beta1: float = 0.0,
        beta2: float = 0.99,
        r1_gamma: float = 0.1,
        r1_every: int = 16,
        ema_kimg: float = 10.0,
        ema_rampup: float | None = 0.05,
        num_val_z: int = 64,
        val_seed: int = 1234,
        z_seed: int = 0,
    ) -> None:
        if not isinstance(z_seed, int) or z_seed < 0:
            raise InvalidValue(f"z_seed must be an integer ≥ 0, got {z_seed!r}")
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = ProGAN(list(sizes))
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.generator_ema[-1].tanh = True  # the sampled (shipped) network's images are clamped to [-1, 1]
        self.discriminator = Discriminator(list(d_widths), self.generator.resolution)
        self.z_dim = self.generator.z_dim
        gen = torch.Generator().manual_seed(val_seed)
        self.register_buffer("validation_z", torch.randn(num_val_z, self.z_dim, generator=gen))
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator_ema(z)

    def on_fit_start(self) -> None:
        # Training runs in the channels-last layout, which the CPU's (oneDNN) and CUDA's convolution kernels
        # prefer: on 2 CPU cores a bf16 step of the world GAN took 8-14 % less time. Only strides change, never
        # values; checkpoints and exported weights read the same (export writes contiguous tensors).
        for net in (self.generator, self.generator_ema, self.discriminator):
            net.to(memory_format=torch.channels_last)

    def configure_optimizers(self):
        betas = (float(self.hparams.beta1), float(self.hparams.beta2))
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas)
        return opt_g, opt_d

    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        real = real.contiguous(memory_format=torch.channels_last)
        opt_g, opt_d = self.optimizers()
        fake = self.generator(self.training_z(real.shape[0]))

        loss_d = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake.detach())).mean()
        logs = {"loss/d": loss_d.detach()}
        every = self.hparams.r1_every
        if every and self.hparams.r1_gamma > 0 and (self.global_step // 2) % every == 0:
            r1 = r1_penalty(self.discriminator, real)
            loss_d = loss_d + self.hparams.r1_gamma / 2 * r1 * every
            logs["loss/r1"] = r1.detach()
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        loss_g = F.softplus(-self.discriminator(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.images_seen += real.shape[0]
        self._update_ema(real.shape[0])
        logs["loss/g"] = loss_g.detach()
        self.log_dict(logs, prog_bar=True)

    def training_z(self, n: int) -> torch.Tensor:
        """(n, z_dim) standard normal z of this training step, seeded by `z_seed`, the global step and the rank:
        a resumed run goes on with new z (the process's RNG is reseeded at every start, so drawing from it
        repeated the z of the run's first steps after each resume), and ranks draw different ones."""
        seed = np.random.SeedSequence([self.hparams.z_seed, self.global_step, self.global_rank]).generate_state(1)[0]
        gen = torch.Generator().manual_seed(int(seed))
        return torch.randn(n, self.z_dim, generator=gen).to(self.device)

    @torch.no_grad()
    def _update_ema(self, batch: int) -> None:
        beta = ema_beta(batch, int(self.images_seen), self.hparams.ema_kimg, self.hparams.ema_rampup)
        for p_ema, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p, 1.0 - beta)
        self.log("ema/beta", beta)

    def validation_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        z = torch.randn(real.shape[0], self.z_dim, device=self.device)
        d_real = torch.sigmoid(self.discriminator(real)).mean()
        d_fake = torch.sigmoid(self.discriminator(self.generator_ema(z))).mean()
        self.log_dict({"val/d_real": d_real, "val/d_fake_ema": d_fake})

    def on_validation_epoch_end(self) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        for name, net in (("ema", self.generator_ema), ("generator", self.generator)):
            images = net(self.validation_z).clamp(-1, 1)  # the trained generator is not clamped
            grid = torchvision.utils.make_grid(images, nrow=8, normalize=True, value_range=(-1, 1))
            experiment.add_image(f"samples/{name}", grid, self.global_step)
