"""Models: the supplementary's parameter counts, output contract, decoders keyed by task id, init,
strict pretrained loading, and that every architecture can fit every task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtlrobust import tasks as T
from mtlrobust.models import MultiTaskNet, count_parameters

ALL = [t.id for t in T.TASKS]


pytestmark = pytest.mark.usefixtures("one_thread")


# Supplementary Table 1 ("Size", 2-task models). ResNets: exact to the table's 2 decimals for d+n
# (and s+d except R50, whose 18-channel seg decoder gives 29.668M -> 29.67M, so the table's pair
# had few output channels). Xception: our reimplementation gives 4.3209M for d+n, 0.2% under the
# table's 4.33M (the authors' Xception copy is not public; see the report).
@pytest.mark.parametrize(
    "arch,tasks,millions",
    [
        ("resnet18", ["seg"], 12.69),  # the reference's single-task ResNet18
        ("resnet18", ["seg", "depth_z"], 14.19),
        ("resnet18", ["depth_z", "normal"], 14.19),
        ("resnet50", ["depth_z", "normal"], 29.66),
        ("resnet152", ["depth_z", "normal"], 64.30),
        ("wide_resnet50_2", ["depth_z", "normal"], 72.99),
    ],
)
def test_parameter_counts_match_supplementary(arch, tasks, millions):
    assert round(count_parameters(MultiTaskNet(arch, tasks)) / 1e6, 2) == millions


def test_xception_parameter_count():
    n = count_parameters(MultiTaskNet("xception", ["depth_z", "normal"]))
    assert n == 4_320_904  # pinned: encoder + two decoders as described in original-code.md section 3
    assert abs(n / 4.33e6 - 1) < 0.005


def test_decoder_size_is_the_reference_formula():
    # decoder(base, C) = 1,504,512 + 289 C for base 512: five ConvT/Conv pairs with biases + BN.
    one = count_parameters(MultiTaskNet("resnet18", ["depth_z"]))
    two = count_parameters(MultiTaskNet("resnet18", ["depth_z", "normal"]))
    assert two - one == 1_504_512 + 289 * 3


@pytest.mark.parametrize("decoder", ["reference", "skip"])
@pytest.mark.parametrize("arch", ["resnet18", "xception"])
def test_outputs_keyed_by_task_at_input_resolution(arch, decoder):
    tids = ["seg", "normal", "curv"]
    m = MultiTaskNet(arch, tids, decoder=decoder).eval()
    x = torch.rand(2, 3, 64, 96)
    out = m(x)
    assert list(out) == tids
    for tid in tids:
        assert out[tid].shape == (2, T.get(tid).channels, 64, 96)
        assert torch.isfinite(out[tid]).all()
    with pytest.raises(ValueError, match="multiples of 32"):
        m(torch.rand(1, 3, 48, 64))


def test_decoders_are_found_by_task_id_not_position():
    torch.manual_seed(0)
    a = MultiTaskNet("xception", ["seg", "depth_z"]).eval()
    b = MultiTaskNet("xception", ["depth_z", "seg"]).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    assert any(k.startswith("decoders.seg.") for k in a.state_dict())
    x = torch.rand(1, 3, 32, 32)
    oa, ob = a(x), b(x)
    for tid in ("seg", "depth_z"):
        assert torch.equal(oa[tid], ob[tid])


def test_input_normalisation_is_inside_and_configurable():
    torch.manual_seed(0)
    m = MultiTaskNet("resnet18", ["depth_z"]).eval()
    assert m.normalization == {"mean": [0.5] * 3, "std": [0.5] * 3}
    x = torch.rand(1, 3, 32, 32)
    direct = m.decoders["depth_z"](m.encoder(x * 2 - 1))
    assert torch.allclose(m(x)["depth_z"], direct, atol=1e-6)
    imnet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    m2 = MultiTaskNet("resnet18", ["depth_z"], normalization=imnet)
    assert "input_mean" in m2.state_dict()
    assert torch.allclose(m2.input_std.flatten(), torch.tensor(imnet["std"]))


def test_reference_initialisation():
    torch.manual_seed(0)
    m = MultiTaskNet("resnet18", ["depth_z"])
    w = m.encoder.layer4[0].conv2.weight  # 3x3, 512 out
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.02)
    bn = m.decoders["depth_z"][1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_pretrained_encoder_loaded_strictly(tmp_path):
    torch.manual_seed(1)
    src = MultiTaskNet("resnet18", ["depth_z"])
    sd = dict(src.encoder.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # a torchvision file's head
    good = tmp_path / "r18.pth"
    torch.save(sd, good)
    m = MultiTaskNet("resnet18", ["seg"], pretrained=good)
    assert torch.equal(m.encoder.conv1.weight, src.encoder.conv1.weight)
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("layer4.1.")}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        MultiTaskNet("resnet18", ["seg"], pretrained=bad)


def _learnable_batch(task_ids, n=4, res=32, seed=0):
    """Smooth random images and targets that are fixed functions of them (all tasks' formats)."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, res // 8, res // 8, generator=g), size=(res, res), mode="bilinear")
    targets, masks = {}, {}
    for k, tid in enumerate(task_ids):
        task = T.get(tid)
        if task.is_segmentation:
            targets[tid] = 1 + x.argmax(1) + 3 * (x.mean(1) > 0.5).long()
        else:
            chans = [
                torch.tanh(3 * (x[:, (i + k) % 3] - x[:, (i + k + 1) % 3])) for i in range(task.channels)
            ]
            targets[tid] = torch.stack(chans, 1)
        mask = torch.ones(n, 1, res, res)
        if task.needs_depth_mask:
            mask[..., : res // 4, : res // 4] = 0
        masks[tid] = mask
    return x, targets, masks


def test_skip_decoders_see_every_encoder_scale():
    """A skip decoder's output depends on the shallow features, not only on the stride-32 representation."""
    torch.manual_seed(0)
    m = MultiTaskNet("resnet50", ["depth_z"], decoder="skip").eval()
    assert m.output_layer("depth_z") is m.decoders["depth_z"].out
    x = torch.rand(1, 3, 64, 64)
    feats = m.encoder.stages(x * 2 - 1)
    assert [f.shape[1] for f in feats] == [*m.encoder.skip_channels, m.encoder.out_channels]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    base = m.decoders["depth_z"](feats)
    feats[0] = feats[0] + 1.0  # change only the stride-2 map
    assert not torch.allclose(m.decoders["depth_z"](feats), base)
    with pytest.raises(ValueError, match="unknown decoder 'unet'"):
        MultiTaskNet("resnet18", ["seg"], decoder="unet")


def _fit(arch, task_ids, steps, lr, decoder="reference"):
    torch.manual_seed(0)
    m = MultiTaskNet(arch, task_ids, decoder=decoder)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    x, y, mk = _learnable_batch(task_ids, n=2, res=32)
    hist = []
    for _ in range(steps):
        out = m(x)
        losses = {t: T.get(t).loss(out[t], y[t], mk[t]).mean() for t in task_ids}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        hist.append({t: v.item() for t, v in losses.items()})
    return hist


@pytest.mark.parametrize("arch", ["resnet18", "xception"])
def test_overfits_all_eleven_tasks(arch):
    hist = _fit(arch, ALL, steps=12, lr=3e-3)
    for tid in ALL:
        first, last = hist[0][tid], min(h[tid] for h in hist[-3:])
        assert last < 0.5 * first, f"{arch} {tid}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("arch", ["resnet18", "xception"])
def test_skip_decoders_overfit_all_eleven_tasks(arch):
    hist = _fit(arch, ALL, steps=12, lr=3e-3, decoder="skip")
    for tid in ALL:
        first, last = hist[0][tid], min(h[tid] for h in hist[-3:])
        assert last < 0.5 * first, f"{arch} skip {tid}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("arch", ["resnet50", "resnet152", "wide_resnet50_2"])
def test_big_encoders_train(arch):
    hist = _fit(arch, ["seg", "depth_z"], steps=3, lr=1e-3)
    for tid in ("seg", "depth_z"):
        assert np.isfinite(hist[-1][tid]) and hist[-1][tid] < hist[0][tid]
