"""The world's GAN as a LightningModule: manual optimisation, an EMA generator, a fixed validation z.

This is written as a GAN researcher's own training module would be, so that the monitoring callbacks
have a real "someone else's training run" to plug into: the generator under training is `generator`,
its exponential moving average (the one that is shipped and sampled) is `generator_ema`.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
import torchvision
from torch.nn import functional as F

from lightning_gd.world.models import Discriminator, Generator


class GANModule(pl.LightningModule):
    """Non-saturating GAN on rendered scenes.

    Args:
        z_dim: latent size.
        g_width: channels of the generator's first block (halved at 16², 32², 64²).
        d_width: channels of the discriminator's first block (doubled per downsampling).
        lr_g, lr_d: Adam learning rates.
        beta1, beta2: Adam betas.
        ema_decay: decay of the generator's exponential moving average.
        num_val_z: size of the fixed validation z used for sample grids.
        val_seed: seed of the fixed validation z.
    """

    def __init__(
        self,
        z_dim: int = 128,
        g_width: int = 256,
        d_width: int = 48,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        ema_decay: float = 0.999,
        num_val_z: int = 64,
        val_seed: int = 1234,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = Generator(z_dim, g_width)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.discriminator = Discriminator(d_width)
        self.register_buffer(
            "validation_z", torch.randn(num_val_z, z_dim, generator=torch.Generator().manual_seed(val_seed))
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator_ema(z)

    def configure_optimizers(self):
        betas = (self.hparams.beta1, self.hparams.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_d, betas=betas)
        return opt_g, opt_d

    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.hparams.z_dim, device=self.device)

        fake = self.generator(z)
        loss_d = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        loss_g = F.softplus(-self.discriminator(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self._update_ema()

        self.log_dict({"loss/d": loss_d, "loss/g": loss_g}, prog_bar=True)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.hparams.ema_decay
        for p_ema, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)

    def validation_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        z = torch.randn(real.shape[0], self.hparams.z_dim, device=self.device)
        d_real = torch.sigmoid(self.discriminator(real)).mean()
        d_fake = torch.sigmoid(self.discriminator(self.generator_ema(z))).mean()
        self.log_dict({"val/d_real": d_real, "val/d_fake_ema": d_fake})

    def on_validation_epoch_end(self) -> None:
        grid = torchvision.utils.make_grid(
            self.generator_ema(self.validation_z), nrow=8, normalize=True, value_range=(-1, 1)
        )
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            experiment.add_image("samples/validation_z", grid, self.global_step)


@torch.no_grad()
def recalibrate_batchnorm(generator: Generator, batches: int = 20, batch_size: int = 128, seed: int = 0) -> Generator:
    """Recompute BatchNorm running statistics of (an EMA) generator from fresh z, as exact averages."""
    momenta = {}
    for m in generator.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            momenta[m], m.momentum = m.momentum, None
    was_training = generator.training
    generator.train()
    g = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    for _ in range(batches):
        generator(torch.randn(batch_size, generator.z_dim, generator=g).to(device))
    for m, mom in momenta.items():
        m.momentum = mom
    generator.train(was_training)
    return generator
