"""Shared by the PyTorch parity tests (tests/interop, tests/models): realistic BatchNorm state."""


def randomise_batch_norm(module, torch):
    """Non-trivial BN statistics and affine so a wrong BN mapping cannot pass."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1.0 + torch.rand(m.running_var.shape, generator=gen))
                m.weight.copy_(0.5 + 0.5 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
