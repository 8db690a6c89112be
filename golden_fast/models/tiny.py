"""Tiny random models for unit tests: GPT-2, LLaMA and Gemma-3 built from a config with a
fixed seed, each with a small tokenizer of its family's kind trained offline.

The tokenizers mimic what matters for exactness tests: GPT-2's byte-level BPE with spaces
attached to the next word and no BOS; LLaMA's SentencePiece-style metaspace with a BOS;
Gemma's metaspace without prefix and a BOS. Everything is built in memory in well under a
second, deterministic, and needs no network.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

TINY_NAMES = ("tiny-gpt2", "tiny-llama", "tiny-gemma3")

# A small corpus of factual-style English so the BPE learns real words (sorted for determinism).
_CORPUS_WORDS = """
the of and in is a to was on for as by with from at that his her which capital city country
France Paris Germany Berlin Italy Rome Spain Madrid Japan Tokyo China Beijing Russia Moscow
England London Canada Ottawa Egypt Cairo India Delhi Brazil Portugal Lisbon Greece Athens
Eiffel Tower Colosseum located official language spoken French German Italian Spanish English
Japanese Chinese Russian Portuguese Greek mother tongue native speaker born died plays played
football basketball baseball soccer guitar piano violin music composer writer painter actor
president king queen company founded Apple Microsoft Google Toyota Sony Nokia Amazon owned
headquarters product iPhone Windows Android currency euro dollar yen pound continent Europe
Asia Africa America Antarctica Oceania river mountain ocean Pacific Atlantic religion
Christianity Islam Buddhism Hinduism profession physician lawyer politician scientist
Albert Einstein Isaac Newton Marie Curie Pablo Picasso Leonardo da Vinci Danielle Darrieux
Michel Rocard Toko Yasuda Edwin Northumbria Apple A5 Honda Civic BBC Radio Nintendo
What where who is the name of one two three four five six seven eight nine ten 1 2 3 4 5 6 7 8 9 0
""".split()


def _corpus() -> list[str]:
    words = sorted(set(_CORPUS_WORDS))
    lines = [" ".join(words[i : i + 7]) for i in range(0, len(words), 7)]
    lines += [
        "The capital of France is Paris.",
        "The mother tongue of Danielle Darrieux is French.",
        "Toko Yasuda plays the guitar.",
        "The Eiffel Tower is located in Paris, France.",
        "Apple A5 was created by Apple.",
        "The official language of Italy is Italian!",
        "What is the capital of Japan? Tokyo, 1990-2024.",
    ]
    return lines * 3


def _train(tk: Tokenizer, vocab_size: int, specials: list[str], alphabet: list[str]) -> Tokenizer:
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tk.train_from_iterator(_corpus(), trainer=trainer)
    return tk


@functools.cache
def _tokenizer_json(family: str) -> str:
    if family == "gpt2":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        tk.post_processor = processors.ByteLevel(trim_offsets=True)
        _train(tk, 600, ["<|endoftext|>"], pre_tokenizers.ByteLevel.alphabet())
    else:
        # SentencePiece-like: spaces become "▁"; byte fallback keeps any text encodable.
        tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        bos = "<s>" if family == "llama" else "<bos>"
        specials = ["<pad>", "<unk>", bos, "</s>" if family == "llama" else "<eos>"]
        specials += [f"<0x{i:02X}>" for i in range(256)]
        if family == "llama":
            # LLaMA-1/2 style: a "▁" is prepended to the first word.
            tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        else:
            # Gemma style: spaces replaced, nothing prepended.
            tk.normalizer = normalizers.Replace(" ", "▁")
        tk.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
        tk.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
            + ([decoders.Strip(" ", 1, 0)] if family == "llama" else [])
        )
        alphabet = sorted(set("".join(_corpus()).replace(" ", "▁")))
        _train(tk, 700, specials, alphabet)
        bos_id = tk.token_to_id(bos)
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 $B:1", special_tokens=[(bos, bos_id)]
        )
    return tk.to_str()


def tiny_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A fresh tokenizer object of the given family ("gpt2", "llama", "gemma3")."""
    tk = Tokenizer.from_str(_tokenizer_json(family))
    if family == "gpt2":
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
            unk_token="<|endoftext|>", pad_token="<|endoftext|>",
        )
    elif family == "llama":
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
        )
    else:
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>"
        )
    tok.padding_side = "left"
    return tok


def build_tiny(name: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """(model, tokenizer) for one of TINY_NAMES; weights drawn with `seed` (same seed, same model)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config, LlamaConfig

    family = {"tiny-gpt2": "gpt2", "tiny-llama": "llama", "tiny-gemma3": "gemma3"}.get(name)
    if family is None:
        raise ValueError(f"unknown tiny model {name!r}; choose from {TINY_NAMES}")
    tok = tiny_tokenizer(family)
    vocab = len(tok)
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab, n_positions=256, n_embd=64, n_layer=4, n_head=4, n_inner=128,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    elif family == "llama":
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False,
        )
    else:
        config = Gemma3TextConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
            sliding_window=16, layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                            "sliding_attention"],
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
    config._name_or_path = name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if family == "gemma3":
            # Gemma initialises its norms at zero scale (weight 1+w): perturb them so the
            # tests see non-trivial norms, as in a trained model.
            for name_, p in model.named_parameters():
                if "norm" in name_:
                    torch.nn.init.normal_(p, std=0.1)
    model.config.name_or_path = name
    model = model.to(dtype).eval()
    return model, tok
