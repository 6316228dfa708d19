"""In-place interpolation: aliasing endpoints, endpoints stored in another dtype, chunked conversion."""

import torch

from wiseft.methods.interpolate import interpolate, interpolate_into


def _modules():
    torch.manual_seed(0)
    return [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
            for _ in range(3)]


def test_endpoint_that_is_the_module_itself():
    m0, m1, _ = _modules()
    theta_0 = {k: v.clone() for k, v in m0.state_dict().items()}
    theta_1 = {k: v.clone() for k, v in m1.state_dict().items()}
    expected = interpolate(theta_0, theta_1, 0.3)
    interpolate_into(m1, theta_0, m1.state_dict(), 0.3)  # theta_1 *is* the module's storage
    assert all(torch.equal(v, expected[k]) for k, v in m1.state_dict().items())


def test_endpoints_in_another_dtype_are_converted_in_chunks():
    m0, m1, target = _modules()
    theta_0 = {k: v.double() for k, v in m0.state_dict().items()}
    theta_1 = {k: v.double() for k, v in m1.state_dict().items()}
    for chunk_bytes in (1, 1 << 30):
        interpolate_into(target, theta_0, theta_1, 0.7, chunk_bytes=chunk_bytes)
        for k, v in target.state_dict().items():
            assert v.dtype == torch.float32
            assert torch.equal(v, torch.lerp(theta_0[k].float(), theta_1[k].float(), 0.7)), (chunk_bytes, k)
