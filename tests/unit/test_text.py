import numpy as np
import pytest
import torch

from hart.config import TextEncoderConfig
from hart.errors import PromptError
from hart.text import WordTextEncoder
from hart.portable.spec import NumpyOps, guided_rows
from hart.portable.words import PAD_ID, WordTokenizer

VOCAB = ("a", "red", "circle", "on", "blue", "background")


def test_word_tokenizer_right_pads_and_marks_real_tokens():
    ids, mask = WordTokenizer(VOCAB, max_tokens=6)(["A red circle!", "blue background"])
    assert ids.tolist() == [[2, 3, 4, PAD_ID, PAD_ID, PAD_ID], [6, 7, PAD_ID, PAD_ID, PAD_ID, PAD_ID]]
    assert mask.sum(1).tolist() == [3, 2]


@pytest.mark.parametrize("prompt, message", [
    ("a purple circle", r"unknown word\(s\) 'purple'; this model knows: a, background, blue, circle, on, red"),
    ("!!!", "has no words"),
    ("", "prompt 1 is empty"),
    ("a red circle on a red circle on", "has 8 words; this model reads at most 6"),
    ("a rød circle", r"unknown word\(s\) 'rød';"),  # the word as typed, not its letter runs 'r', 'd'
    ("a bluе circle, ok?", r"unknown word\(s\) 'bluе', 'ok';"),  # a Cyrillic 'е'; punctuation stripped
])
def test_unknown_or_bad_prompts_are_refused_with_the_reason(prompt, message):
    with pytest.raises(PromptError, match=message):
        WordTokenizer(VOCAB, max_tokens=6)([prompt])


def test_thousands_of_unknown_words_are_named_ten_at_a_time():
    with pytest.raises(PromptError) as refused:
        WordTokenizer(VOCAB, max_tokens=6)([" ".join(f"w{i}x" for i in range(5000))])
    message = str(refused.value)
    assert "and 4990 more;" in message and len(message) < 400, message[:400]


def test_word_encoder_features_ignore_padding_keys():
    encoder = WordTextEncoder(TextEncoderConfig(kind="words", max_tokens=6, dim=16, vocab=VOCAB, layers=1, heads=2))
    context = encoder.encode(["red circle", "red circle"])
    assert context.hidden.shape == (2, 6, 16) and context.hidden.dtype == torch.float32
    assert context.positions[0].tolist() == [0, 1, 1, 1, 1, 1]
    # the real tokens of "red circle" see only themselves: the same words in a longer prompt differ
    assert torch.isfinite(context.hidden).all()


def test_unconditional_rows_are_harts_null_prompt():
    hidden, mask = np.ones((2, 4, 3), dtype=np.float32), np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    rows, rows_mask, positions = guided_rows(NumpyOps(), hidden, mask)
    assert rows.shape == (4, 4, 3) and np.abs(rows[2:]).sum() == 0 and np.array_equal(rows[:2], hidden)
    assert rows_mask[2:].tolist() == [[True, False, False, False]] * 2
    assert positions.tolist() == [[0, 1, 1, 1], [0, 1, 2, 3], [0, 0, 0, 0], [0, 0, 0, 0]]


def tiny_qwen2(folder):
    """A 2-layer random Qwen2 with a real (byte-level BPE) Qwen2 tokenizer, saved like a release folder."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import ByteLevelBPETokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["given a user prompt generate an enhanced prompt red circle on blue background cat"],
                            vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))
    if int(transformers.__version__.split(".")[0]) >= 5:
        merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text().splitlines()[1:] if line]
        tokenizer = transformers.Qwen2Tokenizer(vocab=bpe.get_vocab(), merges=merges)
    else:
        tokenizer = transformers.Qwen2TokenizerFast(vocab_file=str(folder / "vocab.json"),
                                                    merges_file=str(folder / "merges.txt"), pad_token="<|endoftext|>",
                                                    eos_token="<|endoftext|>", unk_token=None)
    tokenizer.save_pretrained(folder)
    config = transformers.Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    transformers.Qwen2Model(config).save_pretrained(folder)
    return transformers.AutoModel.from_pretrained(folder), tokenizer


def test_qwen2_encoder_follows_harts_recipe(tmp_path):
    from hart.text.qwen2 import HART_SYSTEM_PROMPT, Qwen2TextEncoder

    reference, tokenizer = tiny_qwen2(tmp_path)
    config = TextEncoderConfig(kind="qwen2", max_tokens=8, dim=32)
    encoder = Qwen2TextEncoder(config, tmp_path)
    context = encoder.encode(["red circle", "a cat"])
    lengths = [len(tokenizer(p).input_ids) for p in ("red circle", "a cat")]
    assert context.hidden.shape == (2, 8, 32)
    assert context.mask.sum(1).tolist() == lengths and lengths[1] < 8
    assert context.positions[1].tolist() == list(range(lengths[1])) + [lengths[1] - 1] * (8 - lengths[1])

    prompt = tokenizer("red circle", padding="max_length", max_length=8).input_ids
    prefix = tokenizer(HART_SYSTEM_PROMPT, max_length=8, truncation=True).input_ids  # HART truncates it to T too
    attention = [1] * len(prefix) + [1] * lengths[0] + [0] * (8 - lengths[0])
    with torch.no_grad():
        expected = reference(torch.tensor([prefix + prompt]), attention_mask=torch.tensor([attention])).last_hidden_state
    assert torch.allclose(context.hidden[0], expected[0, -8:], atol=1e-5)
    plain = Qwen2TextEncoder(config.__class__(kind="qwen2", max_tokens=8, dim=32, system_prompt=False), tmp_path)
    assert not torch.allclose(plain.encode(["red circle"]).hidden[0], context.hidden[0])


def test_qwen2_folder_problems_are_explained(tmp_path):
    pytest.importorskip("transformers")
    from hart.errors import CheckpointError
    from hart.text.qwen2 import Qwen2TextEncoder

    with pytest.raises(CheckpointError, match="is not a Qwen2 model folder"):
        Qwen2TextEncoder(TextEncoderConfig(), tmp_path)
