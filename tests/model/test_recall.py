"""Recall models: the readout at every position, the loader, and the models that ship."""

import json

import pytest
import torch

from gatesum.model.cells import _Cell
from gatesum.model.errors import GatesumError
from gatesum.model.recall import (
    CELL_NAMES,
    SHIPPED_RECALL_MODELS,
    RecallConfig,
    RecallModel,
    load_recall_model,
    load_recall_models,
    recall_curve,
    recall_trace,
    save_recall_model,
)
from gatesum.model.text import normalize
from gatesum.model.tokenizer import Tokenizer

SMALL = {"vocab_size": 50, "text_pieces": 10, "embedding_size": 8, "hidden_size": 8}
TEXT = (
    "The storm reached the coast on Tuesday night, and the police said that thousands of homes "
    "had lost power. Officials in the city asked people to stay indoors while crews cleared the "
    "roads. A spokesman for the utility company said it could take days to restore service. "
)


def small_model(cell: str, seed: int = 0) -> RecallModel:
    torch.manual_seed(seed)
    return RecallModel(RecallConfig(cell=cell, **SMALL), torch.arange(20, 30)).eval()


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_the_curve_is_the_readout_a_prefix_alone_would_give(cell):
    model = small_model(cell)
    ids = torch.randint(50, (40,), generator=torch.Generator().manual_seed(1))
    curve = recall_curve(model, ids, key=3)
    assert curve.shape == (40,) and ((curve > 0) & (curve < 1)).all()
    for end in (1, 7, 40):  # the document ends after token end − 1
        with torch.no_grad():
            logits = model(model.document(torch.tensor([[3]]), ids[None, :end]))[0, -1, 0]  # (K,)
        assert curve[end - 1].item() == pytest.approx(logits.softmax(-1)[3].item(), abs=1e-5)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_curve_and_trace_take_one_cell_step_per_token(cell, monkeypatch):
    """Linear time: one pass, never a pass per prefix."""
    steps = []
    original = {kind: kind.step for kind in _Cell.__subclasses__()}
    for kind, step in original.items():
        monkeypatch.setattr(
            kind, "step", lambda self, *a, _step=step, **k: steps.append(1) or _step(self, *a, **k)
        )
    model = small_model(cell)
    recall_curve(model, torch.arange(300) % 50, key=0)
    assert len(steps) == 301  # the key and 300 tokens
    steps.clear()
    trace = recall_trace(model, torch.arange(300) % 50, key=0)
    assert trace.shape == (301,) and trace[-1].item() == pytest.approx(1.0)
    assert len(steps) == 301


def test_text_ids_map_to_their_rows_and_the_rest_to_rare():
    model = small_model("gru")
    rows = model.text_rows(torch.tensor([20, 29, 0, 49]))
    assert rows.tolist() == [8, 17, 18, 18]  # K = 8 key rows, then 10 pieces, then rare
    with pytest.raises(GatesumError, match=r"\[0, 50\)"):
        model.text_rows(torch.tensor([50]))
    with pytest.raises(GatesumError, match="key"):
        recall_curve(model, [1, 2], key=8)


def test_an_lstm_whose_memory_cell_grows_past_44_stays_finite():
    """The compiled LSTM loops return NaN once |C| > 44; recall models must not take them."""
    model = small_model("lstm")
    H = model.config.hidden_size
    with torch.no_grad():
        cell = model.encoder.cells[0]
        cell.weight_ih.zero_()
        cell.weight_hh.zero_()
        cell.bias.zero_()
        cell.bias[: 2 * H] = 20.0  # input and forget gates open
        cell.bias[3 * H :] = -20.0  # candidate −1: C_t = −t
    assert torch.isfinite(recall_curve(model, torch.zeros(80, dtype=torch.long), key=1)).all()


def test_save_and_load_give_the_same_curve(tmp_path):
    model = small_model("lstm-peephole", seed=3)
    save_recall_model(tmp_path, "mine", model, {"note": "test"}, tokenizer=None)
    loaded = load_recall_model(tmp_path, "mine")
    ids = torch.tensor([20, 21, 5, 29, 3])
    assert loaded.card["note"] == "test" and loaded.model.config == model.config
    assert torch.allclose(recall_curve(loaded.model, ids, 2), recall_curve(model, ids, 2), atol=1e-6)
    assert loaded.model.text_rows(ids).tolist() == model.text_rows(ids).tolist()


def test_the_loader_names_the_file_at_fault(tmp_path):
    with pytest.raises(GatesumError, match="missing"):
        load_recall_model(tmp_path, "gru")
    save_recall_model(tmp_path, "gru", small_model("gru"), {}, tokenizer=None)
    (tmp_path / "gru.safetensors").write_bytes(b"not weights")
    with pytest.raises(GatesumError, match=r"gru\.safetensors"):
        load_recall_model(tmp_path, "gru")
    card = json.loads((tmp_path / "gru.json").read_text())
    card["tokenizer"] = {"fingerprint": "0123456789abcdef"}
    (tmp_path / "gru.json").write_text(json.dumps(card))
    tokenizer = Tokenizer.load(SHIPPED_RECALL_MODELS.parent / "cnndm-lstm-small" / "tokenizer.model")
    with pytest.raises(GatesumError, match="tokenizer"):
        load_recall_model(tmp_path, "gru", tokenizer)


@pytest.fixture(scope="module")
def shipped():
    tokenizer = Tokenizer.load(SHIPPED_RECALL_MODELS.parent / "cnndm-lstm-small" / "tokenizer.model")
    models = load_recall_models(tokenizer=tokenizer)  # checks each model's tokenizer fingerprint
    ids = torch.tensor(tokenizer.encode(normalize(TEXT * 25)))[:1000]  # 1,000 tokens of news-like text
    return models, ids


def shipped_accuracy(model: RecallModel, ids: torch.Tensor) -> torch.Tensor:
    """Recall accuracy after each token over the 8 keys: (T,)."""
    keys = torch.arange(model.config.key_symbols).view(-1, 1)  # (8, 1)
    with torch.no_grad():
        logits = model(model.document(keys, ids.expand(len(keys), -1)))[:, 1:, 0]  # (8, T, K)
    return (logits.argmax(-1) == keys).float().mean(0)


def test_every_cell_ships_and_fits_in_tens_of_kilobytes(shipped):
    models, _ = shipped
    assert list(models) == list(CELL_NAMES)
    for name in CELL_NAMES:
        assert (SHIPPED_RECALL_MODELS / f"{name}.safetensors").stat().st_size < 100_000
        assert models[name].card["recall"]["1000"]["accuracy"] >= 0.0  # the card holds recall by lag


@pytest.mark.parametrize("name", CELL_NAMES)
def test_each_shipped_model_recalls_as_its_card_says_on_other_text(shipped, name):
    """The card's recall by lag (CNN/DailyMail test articles) holds on a news paragraph it never
    saw: where the card claims ≥ 0.95, every one of the 8 keys is recalled but at most one;
    where it claims near chance, at most 3 of 8."""
    models, ids = shipped
    accuracy = shipped_accuracy(models[name].model, ids)
    for lag in (1, 10, 100, 1000):
        claimed = models[name].card["recall"][str(lag)]["accuracy"]
        if claimed >= 0.95:
            assert accuracy[lag - 1] >= 7 / 8, (name, lag, claimed)
        elif claimed <= 0.2:
            assert accuracy[lag - 1] <= 3 / 8, (name, lag, claimed)


def test_the_shipped_gated_cells_hold_every_key_across_a_thousand_tokens(shipped):
    models, ids = shipped
    for name in ("gru", "lstm", "lstm-peephole"):
        accuracy = shipped_accuracy(models[name].model, ids)
        assert accuracy[9:].min() == 1.0, (name, accuracy[9:].argmin().item() + 10)  # lags 10…1,000
