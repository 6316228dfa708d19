import pytest
import torch
import torch.nn.functional as F

from wiseft.errors import ConfigError
from wiseft.models.factory import build_clip
from wiseft.models.zeroshot import resolve_templates, zero_shot_classifier, zero_shot_weights


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_clip("tiny-vit")


def test_head_equals_direct_computation_from_encode_text(tiny):
    classnames = ["cat", "dog", "red fox"]
    templates = ["a photo of a {}.", "a drawing of a {}."]
    weights = zero_shot_weights(tiny.model, tiny.tokenizer, classnames, templates)

    expected = []
    with torch.no_grad():
        for name in classnames:
            emb = tiny.model.encode_text(tiny.tokenizer([t.format(name) for t in templates]))
            emb = F.normalize(emb, dim=-1).mean(0)
            expected.append(F.normalize(emb, dim=-1))
        expected = tiny.model.logit_scale.exp() * torch.stack(expected)
    torch.testing.assert_close(weights, expected)


def test_classifier_logits_equal_clip_logits(tiny):
    classnames, templates = ["cat", "dog"], ["a photo of a {}."]
    classifier = zero_shot_classifier(tiny.model, tiny.tokenizer, classnames, templates).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        image_features = tiny.model.encode_image(images, normalize=True)
        text_features = tiny.model.encode_text(tiny.tokenizer([templates[0].format(c) for c in classnames]),
                                               normalize=True)
        clip_logits = tiny.model.logit_scale.exp() * image_features @ text_features.T
        torch.testing.assert_close(classifier(images), clip_logits, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(classifier.head.bias) == 0
    assert not any(k.startswith("transformer") or "token_embedding" in k for k in classifier.state_dict())


def test_template_sets():
    assert len(resolve_templates("openai_imagenet")) == 80
    assert resolve_templates(["a {}."]) == ["a {}."]
    with pytest.raises(ConfigError, match="unknown template set 'nope'"):
        resolve_templates("nope")
    with pytest.raises(ConfigError, match="has no"):
        resolve_templates(["no placeholder"])
