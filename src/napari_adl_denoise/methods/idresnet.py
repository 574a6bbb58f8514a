"""IDResNet and IDGAN (Chen, Shi, Sadiq and Zhu, "Image denoising via generative adversarial
networks with detail loss"): one residual generator without batch normalisation, trained for
PSNR with MSE (IDResNet), then from those weights as the generator of a GAN with the detail
loss, MSE + content + adversarial (IDGAN), which trades PSNR for detail. Two methods, one network
family: each method's bundled weights are its default, and either runs the other's."""

from __future__ import annotations

from ._learned import register_learned

register_learned(
    "idresnet",
    "IDResNet: residual network without batch norm, trained with MSE for PSNR (blind Gaussian; RGB)",
    kind="idresnet",
    default_models={(2, 3): "idresnet-2d-rgb"},
)
register_learned(
    "idgan",
    "IDGAN: the IDResNet generator trained on with the detail loss (MSE + content + adversarial) "
    "to keep texture (blind Gaussian; RGB)",
    kind="idresnet",
    default_models={(2, 3): "idgan-2d-rgb"},
)
