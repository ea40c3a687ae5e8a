import pytest
import torch
from torch import nn

from streamlearn.core.model import EMBEDDING_INIT_SCALE, TabularNet, forward_multiply_adds


def make(regression=False, n_outputs=5, hidden=(16, 8)):
    torch.manual_seed(0)
    return TabularNet(
        numeric_slots=3,
        categorical_slots=2,
        hash_buckets=32,
        embedding_dim=4,
        hidden=hidden,
        n_outputs=n_outputs,
        regression=regression,
    )


def inputs(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=g), torch.randint(0, 32, (n, 2), generator=g)


def test_classification_shapes_and_probabilities():
    net = make()
    net.class_mask[:3] = True
    num, cat = inputs()
    prob, hidden = net(num, cat)
    assert prob.shape == (6, 5) and hidden.shape == (6, 8)
    assert net.hidden_dim == 8
    torch.testing.assert_close(prob.sum(1), torch.ones(6))
    logits, hidden_raw = net.raw(num, cat)
    assert logits.shape == (6, 5)
    torch.testing.assert_close(hidden, hidden_raw)


def test_class_mask_gives_unseen_classes_zero_probability():
    net = make()
    num, cat = inputs()
    net.class_mask[[0, 2]] = True
    prob, _ = net(num, cat)
    assert (prob[:, [1, 3, 4]] == 0).all()
    assert (prob[:, [0, 2]] > 0).all()
    torch.testing.assert_close(prob.sum(1), torch.ones(6))
    # switching a class on changes only the distribution, not the logits of others
    before, _ = net.raw(num, cat)
    net.class_mask[1] = True
    after, _ = net.raw(num, cat)
    torch.testing.assert_close(before[:, [0, 2]], after[:, [0, 2]])
    assert (net(num, cat)[0][:, 1] > 0).all()


def test_class_mask_is_a_buffer_saved_with_the_model():
    net = make()
    net.class_mask[:2] = True
    state = net.state_dict()
    assert state["class_mask"].tolist() == [True, True, False, False, False]
    other = make()
    other.load_state_dict(state)
    assert other.class_mask.tolist() == net.class_mask.tolist()


def test_regression_shape_and_destandardisation():
    net = make(regression=True)
    num, cat = inputs()
    raw, hidden = net.raw(num, cat)
    assert raw.shape == (6,) and hidden.shape == (6, 8)
    value, _ = net(num, cat)
    torch.testing.assert_close(value, raw)  # loc 0, scale 1 at start
    net.target_loc.fill_(100.0)
    net.target_scale.fill_(4.0)
    value, _ = net(num, cat)
    torch.testing.assert_close(value, raw * 4.0 + 100.0)
    state = net.state_dict()
    assert float(state["target_loc"]) == 100.0 and float(state["target_scale"]) == 4.0


def test_missing_category_bucket_zero_embeds_to_zero():
    net = make()
    assert net.embedding.padding_idx == 0
    assert (net.embedding.weight[0] == 0).all()


def test_embeddings_feed_the_output():
    net = make()
    net.class_mask[:] = True
    num, cat = inputs(2)
    cat2 = cat % 31 + 1  # a different, non-missing bucket in every slot
    assert (cat2 != cat).all()
    a, _ = net(num, cat)
    b, _ = net(num, cat2)
    assert not torch.allclose(a, b)


def test_embedding_rows_start_small():
    """Rare buckets barely move under Adam: rows must start small, not nn.Embedding's N(0, 1)."""
    torch.manual_seed(0)
    net = TabularNet(3, 2, 4096, 8, (16,), 2)
    rows = net.embedding.weight.detach()[1:]
    std = float(rows.std())
    assert 0.8 * EMBEDDING_INIT_SCALE < std < 1.2 * EMBEDDING_INIT_SCALE
    assert EMBEDDING_INIT_SCALE <= 0.1
    assert (net.embedding.weight[0] == 0).all()  # padding stays exactly zero


def test_embedding_scaling_draws_nothing_from_the_seed():
    """Numeric-only runs stay bit for bit what they were: the dense layers get the same draws
    as when the embedding kept N(0, 1)."""
    net = make()
    torch.manual_seed(0)
    plain = nn.Embedding(32, 4, padding_idx=0)
    first = nn.Linear(3 + 2 * 4, 16)
    torch.testing.assert_close(net.embedding.weight, plain.weight * EMBEDDING_INIT_SCALE)
    torch.testing.assert_close(net.body[0].weight, first.weight, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("hidden", "regression", "wide"),
    [
        ((64, 64), False, True),
        ((256, 256), False, False),
        ((32,), True, True),
        ((8, 4, 2), False, False),
    ],
)
def test_forward_multiply_adds_count_the_built_model(hidden, regression, wide):
    """The size 'auto' decides the device by, from the arguments: the dense layers' weights of
    the model they build (one multiply-add each per event)."""
    model = TabularNet(5, 3, 64, 4, hidden, 6, regression=regression, wide=wide)
    built = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert forward_multiply_adds(5, 3, 4, hidden, 6, regression=regression, wide=wide) == built
